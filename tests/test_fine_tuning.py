"""Fine-tuning from a bundle (`config.init_from`, bigbigan/fine_tuning.py): the first update
receives the bundle's networks with fresh optimizer state; a bundle that does not fit or is
missing is refused in one line before anything is written; a run with checkpoints resumes
from them and ignores the bundle."""

import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from bigbigan import bundle as bundle_lib
from bigbigan import fine_tuning, run_directory, sharding, train
from bigbigan.errors import BundleError, ConfigError
from bigbigan.families import bigbigan as bigbigan_family
from conftest import FAST_COMPILE, REPO, apply_overrides
from mnist_mock import fixed_image_batches

NETWORKS = ("generator", "encoder", "discriminator")
COLLECTIONS = ("params", "batch_stats", "spectral")


def _run_config(tiny_bundle, data_dir, **overrides):
  """The bundle's own run config (its manifest's) on the mock's data, without evaluation;
  `overrides` as {"field__sub": value}."""
  manifest = json.loads((tiny_bundle["bundle"] / bundle_lib.MANIFEST).read_text())
  config = run_directory.config_from_dict(manifest["config"])
  config.update({"data_dir": str(data_dir), "eval_metrics": (), "selection_metric": ""})
  return apply_overrides(config, {k.replace("__", "."): v for k, v in overrides.items()})


def _flat(tree) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _assert_equal_trees(actual, expected, what):
  actual, expected = _flat(actual), _flat(expected)
  assert actual.keys() == expected.keys(), what
  for path, value in expected.items():
    assert actual[path].dtype == value.dtype, f"{what}{path}"
    np.testing.assert_array_equal(actual[path], value, err_msg=f"{what}{path}")


def _differs(a, b) -> bool:
  a, b = _flat(a), _flat(b)
  return any(not np.array_equal(a[path], b[path]) for path in b if b[path].size)


class _FirstUpdate(Exception):
  """Stops the trainer at its first update, carrying the state that the update received."""


def _state_of_first_update(monkeypatch, config, workdir):
  """The TrainState that train_and_evaluate passes to its first update (on one device).

  The update is replaced by one that records its input and stops the run: the state is
  exactly what the compiled update would receive, without compiling it.
  """
  def compile_(train_step, state, batch):
    del train_step, state, batch

    def first_update(state, batch):
      del batch
      raise _FirstUpdate(jax.device_get(state))
    return first_update

  monkeypatch.setattr(train, "_compile", compile_)
  with pytest.raises(_FirstUpdate) as stopped:
    train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1],
                             train_batches=fixed_image_batches(config, 0))
  return stopped.value.args[0]


@pytest.mark.slow
def test_first_update_receives_the_bundles_networks_and_a_fresh_optimizer(
    tiny_bundle, mock_mnist, tmp_path, monkeypatch, caplog):
  # Another seed than the bundle's run: the fresh initialisation differs from the bundle
  # in every network, so no equality below holds by chance.
  config = _run_config(tiny_bundle, mock_mnist, seed=1, init_from=str(tiny_bundle["bundle"]))
  caplog.set_level(logging.INFO)
  state = _state_of_first_update(monkeypatch, config, tmp_path / "run")
  manifest, weights = bundle_lib.read_bundle(str(tiny_bundle["bundle"]))
  assert set(weights) == set(NETWORKS)  # The fixture exports D too.

  init = bigbigan_family.state_initializer(config, bigbigan_family.build_networks(config))
  fresh = jax.device_get(jax.jit(init)(jax.random.PRNGKey(config.seed)))
  for name in NETWORKS:
    network = getattr(state, name)
    for collection in COLLECTIONS:
      _assert_equal_trees(getattr(network, collection), weights[name][collection],
                          f"{name}.{collection}")
    assert _differs(getattr(fresh, name).params, weights[name]["params"]), name
    # Fresh: the normal initialisation's optimizer state, not one carried from anywhere.
    _assert_equal_trees(network.opt_state, getattr(fresh, name).opt_state,
                        f"{name}.opt_state")
  for name in ("generator", "encoder"):
    _assert_equal_trees(state.ema[name], weights[name]["params"], f"ema.{name}")
    _assert_equal_trees(state.standing_stats[name], weights[name]["batch_stats"],
                        f"standing_stats.{name}")
  assert int(state.step) == 0
  np.testing.assert_array_equal(state.rng, fresh.rng)
  # The usual state's structure, so the run's checkpoints and compiled update are too.
  assert jax.tree.structure(state) == jax.tree.structure(fresh)
  assert (f"Initialised G, E and D from bundle {tiny_bundle['bundle']} (step "
          f"{manifest['step']} of its run); optimizer state is fresh") in caplog.messages


@pytest.mark.parametrize("field, value", [("generator__ch", 8), ("encoder__head_width", 16)])
def test_a_bundle_that_does_not_fit_is_refused_before_anything_is_written(
    tiny_bundle, mnist_dir, tmp_path, field, value):
  config = _run_config(tiny_bundle, mnist_dir, init_from=str(tiny_bundle["bundle"]),
                       **{field: value})
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError) as error:
    train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  message = str(error.value)
  network = field.split("__")[0]
  ours = config[network][field.split("__")[1]]
  theirs = tiny_bundle["config"][network][field.split("__")[1]]
  assert "\n" not in message
  assert message.startswith(f"config.init_from={str(tiny_bundle['bundle'])!r} does not fit "
                            f"the config: the bundle's {network}/")
  assert f"its run had {field.replace('__', '.')}={theirs} (this config: {ours})" in message
  assert not workdir.exists()


def test_a_missing_bundle_is_refused_and_an_existing_workdir_left_alone(
    tiny_bundle, mnist_dir, tmp_path):
  missing = tmp_path / "no_bundle"
  config = _run_config(tiny_bundle, mnist_dir, init_from=str(missing))
  workdir = tmp_path / "run"
  with pytest.raises(BundleError) as error:
    train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  assert str(error.value) == (
      f"config.init_from: bundle {missing} not found: pass the directory that "
      "`python -m bigbigan.export --out=...` wrote")
  assert not workdir.exists()
  workdir.mkdir()
  (workdir / "notes.txt").write_text("mine")
  with pytest.raises(BundleError):
    train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  assert [p.name for p in workdir.iterdir()] == ["notes.txt"]
  assert (workdir / "notes.txt").read_text() == "mine"


def test_init_from_is_refused_for_another_family(tiny_config, tmp_path):
  config = tiny_config(init_from=str(tmp_path / "bundle"))
  with pytest.raises(ConfigError) as error:
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert str(error.value) == (
      f"config.init_from={str(tmp_path / 'bundle')!r}: bundles hold BigBiGAN models "
      "(config.network='biggan'), not config.network='mlp'; set init_from='' for this "
      "config")
  assert not (tmp_path / "run").exists()


def test_a_run_with_checkpoints_resumes_and_ignores_init_from(tiny_bundle, mock_mnist,
                                                              tmp_path, monkeypatch, caplog):
  workdir = tmp_path / "run"
  shutil.copytree(tiny_bundle["workdir"], workdir)
  # A bundle that is not there: a resumed run must not even read it.
  config = _run_config(tiny_bundle, mock_mnist, init_from=str(tmp_path / "no_bundle"))
  caplog.set_level(logging.INFO)
  state = _state_of_first_update(monkeypatch, config, workdir)
  # The checkpoint's state (the fixture's), whose EMA differs from its live params: not
  # the bundle's networks, whose params are that EMA.
  saved = jax.device_get(tiny_bundle["state"])
  for name in NETWORKS:
    _assert_equal_trees(getattr(state, name), getattr(saved, name), name)
  _assert_equal_trees(state.ema, saved.ema, "ema")
  assert (f"{workdir / 'checkpoints'} has checkpoints: resuming from step "
          f"{tiny_bundle['step']}; config.init_from={tmp_path / 'no_bundle'} is ignored"
          ) in caplog.messages
  assert not any(m.startswith("Initialised") for m in caplog.messages)


def test_a_config_without_encoder_takes_the_bundles_generator_only(tiny_bundle,
                                                                   mnist_dir):
  config = _run_config(tiny_bundle, mnist_dir, seed=1, encoder__kind="none",
                       init_from=str(tiny_bundle["bundle"]))
  source = fine_tuning.read_checked(config)
  assert set(source.weights) == {"generator"}
  assert source.unused == ("discriminator", "encoder")
  assert fine_tuning.describe(source) == (
      f"Initialised G from bundle {tiny_bundle['bundle']} (step {tiny_bundle['step']} of its "
      "run); D starts from its random initialisation (config.encoder.kind='none': D judges "
      "images alone); the bundle's E is unused (config.encoder.kind='none'); optimizer "
      "state is fresh")
  init = bigbigan_family.state_initializer(config, bigbigan_family.build_networks(config))
  mesh = sharding.make_mesh(jax.devices()[:1])
  state = jax.device_get(fine_tuning.initial_state(init, source, jax.random.PRNGKey(1),
                                                   sharding.replicated(mesh)))
  assert state.encoder is None
  for collection in COLLECTIONS:
    _assert_equal_trees(getattr(state.generator, collection),
                        source.weights["generator"][collection], collection)
  _assert_equal_trees(state.ema["generator"], source.weights["generator"]["params"], "ema")


def _main(workdir, mnist_dir, init_from, overrides):
  """`python -m bigbigan.main` with configs/bigbigan_base.py:tiny as the mock's data allows."""
  fields = {"init_from": init_from,
            # The tiny bundle's networks (tests/mnist_mock.tiny_bigbigan_config).
            "encoder.head_width": 32, "discriminator.latent_width": 32,
            "discriminator.joint_width": 32,
            # Splits of the mock's 20 training images.
            "probe_train_split": "train[8:]", "knn_train_split": "train[8:]",
            "probe_train_val_split": "train[:8]",
            # The mock's metadata, where TFDS looks.
            "data_dir": mnist_dir, **overrides}
  command = [sys.executable, "-m", "bigbigan.main", "--config=configs/bigbigan_base.py:tiny",
             f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in fields.items())]
  env = {**os.environ, "XLA_FLAGS": FAST_COMPILE}  # One CPU device, as a user's laptop has.
  return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)


def _error_lines(result):
  return [line for line in result.stderr.splitlines() if line.startswith("bigbigan: error:")]


@pytest.mark.slow
def test_main_refuses_a_bundle_that_does_not_fit_in_one_line(tiny_bundle, mnist_dir,
                                                             tmp_path):
  workdir = tmp_path / "run"
  result = _main(workdir, mnist_dir, tiny_bundle["bundle"], {"generator.ch": 8})
  assert result.returncode == 1, result.stderr[-3000:]
  assert _error_lines(result) == [result.stderr.strip().splitlines()[-1]]
  assert _error_lines(result)[0].startswith(
      f"bigbigan: error: config.init_from={str(tiny_bundle['bundle'])!r} does not fit the "
      "config: the bundle's generator/")
  assert "generator.ch=4 (this config: 8)" in result.stderr
  assert not workdir.exists()

  missing = _main(workdir, mnist_dir, tmp_path / "no_bundle", {})
  assert missing.returncode == 1, missing.stderr[-3000:]
  assert _error_lines(missing) == [
      f"bigbigan: error: config.init_from: bundle {tmp_path / 'no_bundle'} not found: pass "
      "the directory that `python -m bigbigan.export --out=...` wrote"]
  assert not workdir.exists()
