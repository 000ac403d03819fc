"""families/: one registry of model families, each with the whole interface the tools use;
a family added by one module and one registry line trains, evaluates and is summarised."""

import json
import pathlib

import ml_collections
import pytest

from bigbigan import families, summary, train
from bigbigan.errors import ConfigError
from bigbigan.evaluation import registry

# What the trainer, bigbigan.evaluate, bigbigan.summary and bigbigan.benchmark take from a
# family (families/__init__.py).
INTERFACE = ("validate_config", "build_networks", "state_initializer", "make_update",
             "make_data", "make_predict_fns", "example_inputs", "EVAL_METRICS")


@pytest.mark.parametrize("network", sorted(families.FAMILIES))
def test_every_family_has_the_whole_interface_and_registered_evaluators(network):
  family = families.of(ml_collections.ConfigDict({"network": network}))
  assert [name for name in INTERFACE if not hasattr(family, name)] == []
  assert set(family.EVAL_METRICS) <= set(registry.EVALUATORS)


def test_an_unknown_family_is_refused_with_the_allowed_ones(tiny_config):
  config = tiny_config("bigan", network="resnet")
  with pytest.raises(ConfigError, match=r"config.network='resnet' is unknown: allowed "
                                        r"\('mlp', 'biggan'\)"):
    families.validate_config(config, num_devices=1)


@pytest.mark.slow
def test_a_new_family_is_one_module_and_one_registry_line(tmp_path, tiny_config,
                                                          monkeypatch):
  monkeypatch.setitem(families.FAMILIES, "example", "example_family")  # The one line.
  config = tiny_config("gan", network="example", total_steps=20, eval_every_steps=20,
                       log_every_steps=10, checkpoint_every_steps=20)
  train.train_and_evaluate(config, str(tmp_path))
  lines = [json.loads(line) for line in
           (pathlib.Path(tmp_path) / "metrics.jsonl").read_text().splitlines()]
  assert [line["step"] for line in lines if "modes_covered" in line] == [20]
  assert set(summary.summarise(config)) == {"generator", "discriminator"}
  # Its own checks run where every family's do.
  with pytest.raises(ConfigError, match="this family trains a GAN without an encoder"):
    families.validate_config(tiny_config("bigan", network="example"), num_devices=1)
