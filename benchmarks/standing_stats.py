"""The EMA networks evaluated with the live networks' BatchNorm running averages, and with
their own standing statistics: linear probe, 1-NN and G(E(x)) reconstruction error, for the
trained encoder and the same encoder at its random initialisation.

    TFDS_DATA_DIR=/path/to/tfds python benchmarks/standing_stats.py --workdir=RUN \
        [--step=N] [--standing_stats_batches=16] [--reconstruction_images=2048]

RUN is a BigBiGAN run (python -m bigbigan.main). Its checkpoint is restored as written; the
"running averages" rows run the EMA weights with the BatchNorm statistics the live weights
accumulated in training (and the random-init encoder with BatchNorm's initial mean 0 and
variance 1), the "standing statistics" rows with statistics recomputed for those very
weights (bigbigan/families/standing_stats.py). Prints a markdown table.
"""

import argparse
import dataclasses
from typing import Any

import flax
import jax
import numpy as np

from bigbigan import checkpointing, run_directory, sharding
from bigbigan.data import images as image_data
from bigbigan.data import pipeline
from bigbigan.evaluation.context import EvaluationContext
from bigbigan.evaluation.registry import Evaluation
from bigbigan.families import bigbigan as bigbigan_family
from bigbigan.families.common import normalise_images, to_discriminator_resolution
from bigbigan.state import TrainState

NETWORKS = ("generator", "encoder")


@flax.struct.dataclass
class _StateWithoutStandingStats:
  """TrainState's fields before `standing_stats` joined them: what older checkpoints hold."""

  step: Any
  rng: Any
  generator: Any
  encoder: Any
  discriminator: Any
  ema: Any = None


def _restore_without_standing_stats(config, workdir: str, step, mesh):
  """A checkpoint written before TrainState had `standing_stats`, as a TrainState."""
  networks = bigbigan_family.build_networks(config)
  abstract = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                        sharding=sharding.replicated(mesh)),
      jax.eval_shape(bigbigan_family.state_initializer(config, networks),
                     jax.random.PRNGKey(config.seed)))
  fields = [field.name for field in dataclasses.fields(_StateWithoutStandingStats)]
  checkpointer = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  step = checkpointer.latest_step() if step is None else int(step)
  restored = checkpointer.restore(step, _StateWithoutStandingStats(
      **{name: getattr(abstract, name) for name in fields}))
  checkpointer.close()
  return step, TrainState(**{name: getattr(restored, name) for name in fields}), networks


def _without_standing_stats(state):
  return state.replace(standing_stats=None)


def _reconstruction_error(config, fns, state, mesh, count: int) -> float:
  """Mean over `count` eval_split images of the mean squared error of G(E(x)) against x
  (pixels in [-1, 1], at G's resolution)."""
  errors = []
  preprocess = image_data.image_preprocess(config.dataset, config.encoder.resolution,
                                           train=False)
  for batch in pipeline.eval_batches(config.dataset, config.eval_split,
                                     config.eval_batch_size, preprocess, config.data_dir):
    x = normalise_images(sharding.to_global_batch(batch["image"], mesh))
    reconstructed = fns.generate(state, fns.encode(state, x)["z_mean"])
    x_small = to_discriminator_resolution(x, config.resolution)
    mask = sharding.gather_rows(sharding.to_global_batch(batch["mask"], mesh)).astype(bool)
    squared = (sharding.gather_rows(reconstructed) - sharding.gather_rows(x_small)) ** 2
    errors.append(squared.reshape(len(squared), -1).mean(1)[mask])
    if sum(map(len, errors)) >= count:
      break
  return float(np.concatenate(errors)[:count].mean())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--step", default=None)
  parser.add_argument("--standing_stats_batches", type=int, default=16)
  parser.add_argument("--reconstruction_images", type=int, default=2048)
  args = parser.parse_args()
  pipeline.hide_accelerators_from_tensorflow()

  config = run_directory.load_run_config(args.workdir)
  written = config.get("standing_stats_batches", 0)
  mesh = sharding.make_mesh()
  if "standing_stats_batches" in config:
    step, state, networks = run_directory.restore_run(
        config, args.workdir, run_directory.parse_step(args.step), mesh)
  else:
    step, state, networks = _restore_without_standing_stats(config, args.workdir, args.step,
                                                            mesh)
  initial = jax.jit(
      bigbigan_family.state_initializer(config, bigbigan_family.build_networks(config)),
      out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(config.seed))
  config.standing_stats_batches = args.standing_stats_batches
  data = bigbigan_family.make_data(config, mesh)
  refresh = data.make_inference_state_fn(networks)

  def with_standing_stats(s):
    live = {name: getattr(s, name).batch_stats for name in NETWORKS}
    return refresh(s.replace(standing_stats=live))

  variants = {
      "running averages": (_without_standing_stats(state), _without_standing_stats(initial)),
      "standing statistics": (with_standing_stats(state), with_standing_stats(initial)),
  }
  fns = bigbigan_family.make_predict_fns(config, networks, mesh)
  rows = []
  for name, (trained, random_init) in variants.items():
    evaluation = Evaluation(EvaluationContext(config, mesh, args.workdir, data,
                                              initial_state=lambda s=random_init: s),
                            names=("linear_probe", "knn"))
    found = evaluation.run(fns, trained, step)
    for encoder, s, suffix in (("learned (EMA)", trained, ""),
                               ("random init", random_init, "_random_init")):
      rows.append((name, encoder, found[f"linear_accuracy{suffix}"],
                   found[f"knn_1_accuracy_cosine{suffix}"],
                   _reconstruction_error(config, fns, s, mesh, args.reconstruction_images)))
  print(f"{args.workdir}, step {step} (checkpoint written with standing_stats_batches="
        f"{written}); standing statistics over {args.standing_stats_batches} batches of "
        f"{config.batch_size}\n")
  print("| BatchNorm statistics | encoder | linear probe top-1 | 1-NN (cosine) | "
        "G(E(x)) MSE |")
  print("| --- | --- | --- | --- | --- |")
  for name, encoder, probe, knn, mse in rows:
    print(f"| {name} | {encoder} | {100 * probe:.2f}% | {100 * knn:.2f}% | {mse:.4f} |")


if __name__ == "__main__":
  main()
