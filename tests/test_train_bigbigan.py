"""BigBiGAN through the trainer on (mock) MNIST: the run-output contract, the evaluation
against the encoder at random initialisation, resuming, 2 processes = 1, and clear errors."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

import bigbigan
from bigbigan import (checkpointing, evaluate, export, families, run_directory, sharding,
                      train)
from bigbigan.evaluation.context import EvaluationContext
from bigbigan.evaluation.registry import Evaluation
from bigbigan.families import bigbigan as bigbigan_family
from bigbigan.families.common import normalise_images
from conftest import FAST_COMPILE, REPO, free_port, run_processes
import mnist_mock
from mnist_mock import fixed_image_batches, tiny_bigbigan_config

LOSSES = ("d_loss", "eg_loss", "encoder_std", "real_score_xz", "fake_score_xz")
# The metrics that have a *_random_init reference: the linear probe's and k-NN's headline.
HEADLINE_METRICS = ("linear_accuracy", "knn_1_accuracy_cosine")


def _evaluation(config, mesh, workdir, data, networks, names=None):
  """The evaluation the trainer runs (evaluation/registry.py) of `names` (default: the
  config's), with the run's initial state as the random-init reference."""
  initial_state = families.initial_state_for_evaluation(
      config, networks, mesh, data.make_inference_state_fn(networks))
  return Evaluation(EvaluationContext(config, mesh, workdir, data, initial_state), names)


def _metrics(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _steps(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.slow(seconds=87)
def test_trains_and_evaluates_against_the_random_encoder(mock_mnist, tmp_path):
  config = tiny_bigbigan_config(data_dir=mock_mnist)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 2
  records = _metrics(tmp_path)
  assert [r["step"] for r in records] == [1, 2]
  final = records[-1]
  for name in LOSSES + ("linear_accuracy", "knn_1_accuracy_cosine",
                        "linear_accuracy_random_init", "knn_1_accuracy_cosine_random_init",
                        "linear_accuracy_avepool_feat", "linear_top5_accuracy_avepool_feat",
                        "linear_train_val_accuracy_avepool_feat",
                        "knn_5_accuracy_cosine_avepool_feat"):
    assert np.isfinite(final[name]), name
  for name in ("linear_accuracy", "linear_accuracy_random_init",
               "knn_5_accuracy_cosine_avepool_feat"):
    # 11 test images: the accuracy is a whole number of them.
    assert final[name] * 11 == pytest.approx(round(final[name] * 11))
  assert final["linear_top5_accuracy_avepool_feat"] >= final["linear_accuracy"]

  # The *_random_init metrics are those of the run's initial state (state_initializer from
  # config.seed, made ready for inference as the trainer makes its own), recomputed here
  # through the family's evaluation. (On the mock's noise images every encoder is at
  # chance, and 2 steps barely move the EMA encoder: the trained metrics happen to equal
  # these. That the reference never comes from the evaluated state is tested on images
  # that tell the classes apart: test_random_init_reference_is_the_initial_encoders.)
  mesh = sharding.make_mesh()
  networks = bigbigan_family.build_networks(config)
  data = bigbigan_family.make_data(config, mesh)
  init = jax.jit(bigbigan_family.state_initializer(config, networks),
                 out_shardings=sharding.replicated(mesh))
  initial = data.make_inference_state_fn(networks)(init(jax.random.PRNGKey(config.seed)))
  predict = bigbigan_family.make_predict_fns(config, networks, mesh)
  reference = _evaluation(config, mesh, str(tmp_path), data, networks,
                          names=("linear_probe", "knn")).run(predict, initial, 0)
  for metric in HEADLINE_METRICS:
    assert final[f"{metric}_random_init"] == reference[metric], metric
  for figure in ("reconstructions", "interpolations", "neighbours"):
    assert (tmp_path / f"{figure}_0000002.png").exists(), figure
  assert _steps(tmp_path) == [2]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["network"] == "biggan" and saved["dataset"] == "mnist"

  # bigbigan.evaluate on the saved checkpoint reproduces training's evaluation of it; FID
  # and IS without Inception weights are named as not computed, and k-NN still runs.
  flags.FLAGS(["evaluate", f"--workdir={tmp_path}", "--metrics=knn,fid,is", "--step=2"])
  with pytest.raises(SystemExit) as exit_info:
    evaluate.main(["evaluate"])
  assert exit_info.value.code == 1
  evaluated = _metrics(tmp_path)[-1]
  assert evaluated["step"] == 2 and evaluated["evaluation"] == "bigbigan.evaluate"
  for name in ("knn_1_accuracy_cosine", "knn_5_accuracy_cosine_avepool_feat",
               "knn_1_accuracy_cosine_random_init"):
    assert evaluated[name] == final[name], name
  assert "fid" not in evaluated and "linear_accuracy" not in evaluated

  # The probe streamed (features recomputed by the encoder on every pass, as for ImageNet).
  config = run_directory.load_run_config(str(tmp_path))
  config.probe_in_memory = False
  step, streamed, errors = evaluate.evaluate_checkpoint(config, str(tmp_path),
                                                        metrics=("linear_probe",))
  assert step == 2 and not errors
  assert streamed["linear_accuracy"] * 11 == pytest.approx(round(streamed["linear_accuracy"] * 11))
  assert streamed["linear_top5_accuracy_avepool_feat"] >= streamed["linear_accuracy"]

  # Exported and loaded, the trained run's encoder gives bit for bit the outputs of the
  # trained state's EMA encoder as the evaluation suite runs it, given its weights whole as
  # a bundle holds them (from the split EMA, XLA may fuse the program otherwise, and round
  # differently).
  export.export_run(str(tmp_path), str(tmp_path / "bundle"))
  model = bigbigan.load(str(tmp_path / "bundle"))
  fns = bigbigan_family.make_predict_fns(config, bigbigan_family.build_networks(config), mesh)
  images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
  x = jax.jit(normalise_images)(jax.device_put(images, sharding.batch_sharded(mesh)))
  whole = jax.device_put(state, sharding.replicated(mesh))
  expected, got = fns.encode(whole, x), model.encode(images)
  assert model.step == 2 and set(got) == set(expected)
  for name, value in expected.items():
    np.testing.assert_array_equal(got[name], np.asarray(value), err_msg=name)
  # The trained encoder that training evaluated is not the random one of the reference.
  assert not np.allclose(expected["avepool_feat"], fns.encode(initial, x)["avepool_feat"])


def _class_template(example_id: int) -> np.ndarray:
  """The image of the small MNIST's example (tests/mnist_mock.py) replaced by its class's
  template: all images of a class are equal, so an encoder whose features tell the 10
  templates apart gets every cosine 1-NN right."""
  templates = np.random.default_rng(0).integers(0, 256, (10,) + mnist_mock.IMAGE_SHAPE,
                                                dtype=np.uint8)
  return templates[mnist_mock.mock_label(example_id)]


@pytest.mark.slow  # The evaluation suite's compilations: about 30 s on 2 CPU cores.
def test_random_init_reference_is_the_initial_encoders(tmp_path):
  # On class templates the random encoder's 1-NN is exactly right (11 of 11), and an
  # encoder whose features are all 0 exactly wrong but once: every neighbour is a tie, won
  # by the first row of knn_train_split (train[8:], label 8), and 1 of the 11 test labels
  # is 8. Evaluating the blind encoder, the random-init reference must stay 11 of 11.
  mnist_mock.write_dataset(str(tmp_path / "tfds"), image_of=_class_template)
  config = tiny_bigbigan_config(data_dir=str(tmp_path / "tfds"), eval_metrics=("knn",))
  mesh = sharding.make_mesh()
  networks = bigbigan_family.build_networks(config)
  data = bigbigan_family.make_data(config, mesh)
  for_inference = data.make_inference_state_fn(networks)
  init, _ = families.jitted_initializer(config, networks, mesh)
  initial = init(jax.random.PRNGKey(config.seed))
  blind = for_inference(initial.replace(ema={
      **initial.ema, "encoder": jax.tree.map(jnp.zeros_like, initial.ema["encoder"])}))
  evaluation = _evaluation(config, mesh, str(tmp_path), data, networks)
  predict = bigbigan_family.make_predict_fns(config, networks, mesh)
  found = evaluation.run(predict, blind, 1)
  assert found["knn_1_accuracy_cosine"] == 1 / 11
  assert found["knn_1_accuracy_cosine_random_init"] == 1.0
  # The reference is the evaluation of the initial state itself.
  assert evaluation.run(predict, for_inference(initial), 2)["knn_1_accuracy_cosine"] == 1.0


@pytest.mark.slow(seconds=80)
def test_resumed_run_equals_uninterrupted_run(mock_mnist, tmp_path):
  """On 8 devices, exactly; then from the 8 devices' checkpoint on 1 and 2 devices."""
  def run(workdir, total_steps, start_step):
    config = tiny_bigbigan_config(data_dir=mock_mnist, total_steps=total_steps,
                                  eval_every_steps=100, eval_metrics=())
    return train.train_and_evaluate(config, str(workdir),
                                    train_batches=fixed_image_batches(config, start_step))

  straight = jax.device_get(run(tmp_path / "straight", 3, 0))
  at_2 = jax.device_get(run(tmp_path / "resumed", 2, 0))
  resumed = jax.device_get(run(tmp_path / "resumed", 3, 2))
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  assert [r["step"] for r in _metrics(tmp_path / "resumed")] == [1, 2, 3]
  for a, b in zip(_metrics(tmp_path / "straight"), _metrics(tmp_path / "resumed")):
    for name in LOSSES:
      assert a[name] == b[name], name

  # The 8 devices' checkpoint of step 2, with Adam's moments and the EMA split 8 ways,
  # restores exactly on 1 device and on 2, each in its own layout.
  config = tiny_bigbigan_config(data_dir=mock_mnist, total_steps=3, eval_every_steps=100,
                                eval_metrics=())
  checkpoints = checkpointing.Checkpointer.for_config(str(tmp_path / "resumed"), config)
  family = families.of(config)
  shapes = jax.eval_shape(family.state_initializer(config, family.build_networks(config)),
                          jax.random.PRNGKey(0))
  for count in (1, 2):
    mesh = sharding.make_mesh(jax.devices()[:count])
    restored = checkpoints.restore(2, sharding.abstract_state(shapes, mesh))
    assert jax.tree.map(lambda leaf: leaf.sharding, restored) == sharding.state_shardings(
        shapes, mesh)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), at_2)
  checkpoints.close()
  # And the run goes on from it on 1 device: its third step is the 8 devices' to the
  # tolerance of test_two_processes_equal_one_process (Adam with beta1 0 turns the rounding
  # of near-zero gradients into learning-rate-sized differences after the first steps).
  shutil.copytree(tmp_path / "resumed" / "checkpoints" / "2",
                  tmp_path / "on_1" / "checkpoints" / "2")
  on_1 = train.train_and_evaluate(config, str(tmp_path / "on_1"), devices=jax.devices()[:1],
                                  train_batches=fixed_image_batches(config, 2))
  assert int(on_1.step) == 3 and [r["step"] for r in _metrics(tmp_path / "on_1")] == [3]
  for name in LOSSES:
    np.testing.assert_allclose(_metrics(tmp_path / "on_1")[0][name],
                               _metrics(tmp_path / "straight")[2][name], rtol=1e-2,
                               err_msg=name)


@pytest.mark.slow(seconds=130)
def test_two_processes_equal_one_process(mnist_dir, tmp_path):
  """jax.distributed over 2 local processes x 2 devices: 3 steps and a checkpoint; the losses
  equal a 1-process run with the same global batches. (A multi-process resume is tested on
  the MLP models, tests/test_train.py: the checkpointing code is shared.) The 1-process run
  is on this process's 8 devices, where the resumed run above has compiled its programs
  (the compilation cache holds them); the update's 8 = 1 is test_bigbigan_update.py's."""
  script = str(REPO / "tests" / "mnist_mock.py")
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {FAST_COMPILE}",
         "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
  port = free_port()
  run_processes([(f"process_{i}",
                  [sys.executable, script, "bigbigan", str(mnist_dir), str(tmp_path / "multi"),
                   str(i), "2", str(port), "3", "0"], env) for i in range(2)], tmp_path)
  assert _steps(tmp_path / "multi") == [2, 3]

  config = tiny_bigbigan_config(data_dir=str(mnist_dir), total_steps=3,
                                eval_metrics=())
  train.train_and_evaluate(config, str(tmp_path / "single"),
                           train_batches=fixed_image_batches(config, 0))
  multi, single = _metrics(tmp_path / "multi"), _metrics(tmp_path / "single")
  assert [r["step"] for r in multi] == [r["step"] for r in single] == [1, 2, 3]
  # Reductions over 2 processes and over 1 sum in different orders. The first steps agree to
  # float32 rounding (2.4e-5 measured for eg_loss at step 2); after them, Adam with beta1 0
  # (an update of about lr * sign(g) for each weight) turns the rounding of near-zero
  # gradients into lr-sized weight differences, so the third step agrees to 1e-2
  # (1.5e-3 measured for encoder_std after a resume).
  for a, b in zip(multi, single):
    for name in LOSSES:
      np.testing.assert_allclose(a[name], b[name], rtol=1e-4 if a["step"] < 3 else 1e-2,
                                 err_msg=f"{name} at step {a['step']}")


@pytest.mark.slow
def test_missing_imagenet_is_one_clear_line(tmp_path):
  env = {**os.environ, "XLA_FLAGS": FAST_COMPILE, "TFDS_DATA_DIR": str(tmp_path / "tfds")}
  result = subprocess.run(
      # --allow_cpu: past the refusal of a full-size config on the CPU, to the data.
      [sys.executable, "-m", "bigbigan.main", "--config=configs/resnet50.py", "--allow_cpu",
       f"--workdir={tmp_path / 'run'}"], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("bigbigan: error: ") and "ILSVRC2012_img_train.tar" in last
  assert not (tmp_path / "run" / "checkpoints").exists() or not any(
      (tmp_path / "run" / "checkpoints").iterdir())
