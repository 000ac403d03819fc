"""families/: one registry of model families, each with the whole interface the tools use;
a family added by one module and one registry line trains, evaluates and is summarised."""

import json
import pathlib

import ml_collections
import pytest

from bigbigan import families, summary, train
from bigbigan.config_files import load_config
from bigbigan.errors import ConfigError
from bigbigan.evaluation import registry
from conftest import REPO

# What the trainer, bigbigan.evaluate, bigbigan.summary and bigbigan.benchmark take from a
# family (families/__init__.py).
INTERFACE = ("validate_config", "build_networks", "state_initializer", "make_update",
             "make_data", "make_predict_fns", "example_inputs", "eval_metrics")


@pytest.mark.parametrize("network", sorted(families.FAMILIES))
def test_every_family_has_the_whole_interface_and_registered_evaluators(network):
  family = families.of(ml_collections.ConfigDict({"network": network}))
  assert [name for name in INTERFACE if not hasattr(family, name)] == []
  assert [name for name in INTERFACE if not callable(getattr(family, name))] == []


@pytest.mark.parametrize("config_file", ["mixture.py", "mnist_bigan.py", "bigbigan_base.py:tiny",
                                         "bigbigan_base.py:mnist", "resnet50.py",
                                         "revnet4x.py"])
def test_every_configs_evaluators_are_registered_and_allowed(config_file):
  config = load_config(f"{REPO}/configs/{config_file}")
  allowed = families.of(config).eval_metrics(config)
  assert set(config.eval_metrics) <= set(allowed) <= set(registry.EVALUATORS)


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


@pytest.mark.slow
def test_evaluate_reads_an_mlp_run_as_the_trainer_evaluated_it(tmp_path, tiny_config):
  """bigbigan.evaluate builds the family's predict functions and evaluators from the run's
  config.json alone: on the mixture run's last checkpoint it gives the trainer's figures."""
  # pylint: disable=g-import-not-at-top
  from bigbigan import evaluate, run_directory
  # pylint: enable=g-import-not-at-top
  config = tiny_config("bigan", total_steps=40, eval_every_steps=40, log_every_steps=20,
                       checkpoint_every_steps=40)
  train.train_and_evaluate(config, str(tmp_path))
  trained = [json.loads(line) for line in
             (pathlib.Path(tmp_path) / "metrics.jsonl").read_text().splitlines()
             if "modes_covered" in line][-1]
  step, results, errors = evaluate.evaluate_checkpoint(
      run_directory.load_run_config(str(tmp_path)), str(tmp_path))
  assert (step, errors) == (40, {})
  assert results == {name: trained[name] for name in results}
  assert set(results) == {"modes_covered", "high_quality_modes", "high_quality_fraction",
                          "reconstruction_error"}
