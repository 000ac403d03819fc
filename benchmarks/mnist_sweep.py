"""Long MNIST BiGAN runs on one accelerator without TensorFlow: a recipe search tool.

    # Here, where TFDS can read MNIST: the arrays, once (11 MB).
    TFDS_DATA_DIR=/path/to/tfds python benchmarks/mnist_sweep.py export --data mnist.npz
    # Anywhere with jax, flax, optax and ml_collections (no TensorFlow, no TFDS, no clu):
    python benchmarks/mnist_sweep.py run --data mnist.npz --config configs/mnist_bigan.py:fast \
        --epochs 100 --eval-every 10 --set discriminator.r1_weight=0.5 [--name NAME]

Trains the config with the product's networks, optimizers, train step
(families/bigan_update.py) and 1-NN evaluation (evaluation/knn.py) on MNIST held in memory,
and prints one JSON line per evaluation: test 1-NN accuracy (L2 and cosine) on E(x) and on
E's penultimate layer. The trainer (train.py) is not used: it reads data through
TFDS/tf.data and writes through clu, both of which need TensorFlow, which the accelerator
machines of this project lack. The data order differs from the TFDS pipeline's (a NumPy
permutation per epoch), so results match `python -m bigbigan.main` in distribution, not bit
for bit.

Each device call runs `--steps-per-call` updates in a `lax.scan`, so a small MLP step is not
bound by Python dispatch.
"""

import argparse
import ast
import json
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MNIST_TRAIN_EXAMPLES = 60_000


def export(data: str) -> None:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  arrays = {}
  for split in ("train", "test"):
    images, labels = tfds.as_numpy(tfds.load("mnist", split=split, batch_size=-1,
                                             as_supervised=True))
    arrays[f"x_{split}"] = images.reshape(len(images), -1)
    arrays[f"y_{split}"] = labels.astype(np.int32)
  np.savez_compressed(data, **arrays)
  print(f"wrote {data}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


def run(args: argparse.Namespace) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  from bigbigan import optimizers as optimizers_lib  # pylint: disable=g-import-not-at-top
  from bigbigan import sharding  # pylint: disable=g-import-not-at-top
  from bigbigan.config_files import (apply_overrides, epochs_to_steps,  # pylint: disable=g-import-not-at-top
                                     load_config)
  from bigbigan.evaluation.knn import nearest_neighbor_accuracy  # pylint: disable=g-import-not-at-top
  from bigbigan.families import bigan_predict, bigan_update  # pylint: disable=g-import-not-at-top
  from bigbigan.families.bigan import init_train_state  # pylint: disable=g-import-not-at-top
  from bigbigan.models.networks import build_mlp_networks  # pylint: disable=g-import-not-at-top

  config = load_config(str(REPO / args.config) if not pathlib.Path(args.config).is_file()
                       else args.config)
  overrides = {}
  for item in args.set:
    field, _, value = item.partition("=")
    try:
      overrides[field] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[field] = value
  apply_overrides(config, overrides)
  steps_per_epoch = MNIST_TRAIN_EXAMPLES / config.batch_size
  if args.epochs:
    config.total_steps = epochs_to_steps(args.epochs, MNIST_TRAIN_EXAMPLES, config.batch_size)
  if config.objective != "adversarial" or config.conditional:
    raise SystemExit("mnist_sweep.py: unconditional adversarial configs only")
  mesh = sharding.make_mesh(jax.devices()[:1])

  arrays = np.load(args.data)
  x_train, y_train, x_test, y_test = (arrays[k] for k in ("x_train", "y_train", "x_test",
                                                          "y_test"))
  networks = build_mlp_networks(config, x_train.shape[1])
  optimizers = optimizers_lib.make_optimizers(config)
  state = jax.jit(lambda rng: init_train_state(
      networks, optimizers, rng, data_dim=x_train.shape[1], latent_dim=config.latent_dim,
      joint=bigan_update.joint_discriminator(config, networks), num_classes=0,
      ema=config.ema_decay > 0))(jax.random.PRNGKey(config.seed))
  normalise = lambda x: x.astype(np.float32) / 255.0  # As data.mnist.normalise_pixels.
  train_step = bigan_update.make_train_step(config, networks, optimizers, mesh, normalise)

  @jax.jit
  def train_steps(state, batches):  # [K, B, 784] uint8 -> K updates.
    return jax.lax.scan(train_step, state, batches)

  features_fn = bigan_predict.make_predict_fns(config, networks, mesh, normalise).features

  def evaluate(state) -> dict[str, float]:
    def features(x):
      parts = [jax.device_get(features_fn(state, normalise(x[i:i + 10_000])))
               for i in range(0, len(x), 10_000)]
      return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    train, test = features(x_train), features(x_test)
    return {f"knn_1_{metric}_{name}": round(100 * nearest_neighbor_accuracy(
        train[name], y_train, test[name], y_test, mesh, metric), 2)
            for name in train for metric in ("l2", "cosine")}

  # A stream of batches over epochs: a fresh permutation per epoch, batches across epoch
  # boundaries (as the TFDS pipeline does).
  rng = np.random.default_rng(config.seed)
  order = np.empty(0, np.int64)
  eval_every = int(round(args.eval_every * steps_per_epoch))
  step, start = 0, time.time()
  while step < config.total_steps:
    count = min(args.steps_per_call, config.total_steps - step,
                eval_every - step % eval_every)
    needed = count * config.batch_size
    while len(order) < needed:
      order = np.concatenate([order, rng.permutation(MNIST_TRAIN_EXAMPLES)])
    batches, order = x_train[order[:needed]], order[needed:]
    state, metrics = train_steps(state, batches.reshape(count, config.batch_size, -1))
    step += count
    if step % eval_every == 0 or step == config.total_steps:
      metrics = {k: float(np.mean(v)) for k, v in jax.device_get(metrics).items()}
      if not all(np.isfinite(v) for v in metrics.values()):
        raise SystemExit(f"{args.name}: non-finite metrics at step {step}: {metrics}")
      line = {"name": args.name, "epoch": round(step / steps_per_epoch, 2), "step": step,
              "seconds": round(time.time() - start, 1), **evaluate(state),
              "d_loss": round(metrics["d_loss"], 4)}
      print(json.dumps(line), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  exporter = commands.add_parser("export", help="MNIST from TFDS to an .npz file")
  exporter.add_argument("--data", required=True)
  runner = commands.add_parser("run", help="train and evaluate one config")
  runner.add_argument("--data", required=True)
  runner.add_argument("--config", default="configs/mnist_bigan.py:fast")
  runner.add_argument("--epochs", type=float, default=0, help="0: the config's total_steps")
  runner.add_argument("--eval-every", type=float, default=10, help="epochs")
  runner.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
  runner.add_argument("--steps-per-call", type=int, default=200)
  runner.add_argument("--name", default="run")
  args = parser.parse_args()
  if args.command == "export":
    export(args.data)
  else:
    run(args)


if __name__ == "__main__":
  main()
