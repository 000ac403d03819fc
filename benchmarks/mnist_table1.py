"""The BiGAN paper's Table 1 (permutation-invariant MNIST, 1-NN test accuracy) beside ours.

    TFDS_DATA_DIR=/path/to/tfds python benchmarks/mnist_table1.py \
        [--methods bigan,gan,lr,jlr,ae_l2,ae_l1] [--schedule fast] [--epochs N] \
        [--probe] [--workdir DIR]

Trains configs/mnist_bigan.py:<method>,<schedule> for every method, one after the other
(each uses every core), on the real MNIST prepared for TFDS, and prints one row per method:
the paper's 1-NN accuracy, ours at the final step on the method's representation (L2 and
cosine), on E's penultimate layer, the epochs and the wall time (training, checkpoints and
the config's periodic evaluations, without the linear probes unless --probe). A finished run in
--workdir is read back, not retrained, so an interrupted table resumes where it stopped.

The representations: for BiGAN and the autoencoders, E's linear output before the tanh
that bounds E(x) (`z_logits`, as the official BiGAN code measures it); for LR and JLR, E(x)
(`z_mean`, unbounded); for D, the last hidden layer of a GAN's discriminator. Raw pixels
(1-NN, L2) are the reference.
"""

import argparse
import json
import os
import pathlib
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
MNIST_TRAIN_EXAMPLES = 60_000
# Table 1 of Donahue et al., "Adversarial Feature Learning" (ICLR 2017).
PAPER = {"bigan": ("BiGAN", 97.39), "gan": ("D", 97.30), "lr": ("LR", 97.44),
         "jlr": ("JLR", 97.13), "ae_l2": ("AE (l2)", 97.58), "ae_l1": ("AE (l1)", 97.63)}
TIMING_FILE = "benchmark_seconds.json"


def train(method: str, schedule: str, epochs, probe: bool, workdir: str) -> float:
  """Trains one method to the end (resuming if interrupted); returns the wall seconds."""
  timing = os.path.join(workdir, TIMING_FILE)
  if os.path.exists(timing):
    with open(timing) as f:
      return json.load(f)["seconds"]
  from absl import logging  # pylint: disable=g-import-not-at-top
  from bigbigan import train as train_lib  # pylint: disable=g-import-not-at-top
  from bigbigan.config_files import epochs_to_steps, load_config  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  config = load_config(f"{REPO}/configs/mnist_bigan.py:{method},{schedule}")
  if epochs:
    config.total_steps = epochs_to_steps(epochs, MNIST_TRAIN_EXAMPLES, config.batch_size)
  config.eval_linear_probe = probe
  start = time.time()
  train_lib.train_and_evaluate(config, workdir)
  seconds = time.time() - start
  with open(timing, "w") as f:
    json.dump({"seconds": seconds}, f)
  return seconds


def final_metrics(workdir: str) -> dict:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f][-1]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--methods", default=",".join(PAPER))
  parser.add_argument("--schedule", default="fast",
                      help="A schedule variant of configs/mnist_bigan.py: fast or paper.")
  parser.add_argument("--epochs", type=float, default=None,
                      help="Overrides the schedule's length (quick checks).")
  parser.add_argument("--probe", action="store_true",
                      help="Also fit the linear probes at every evaluation (slower).")
  parser.add_argument("--workdir", default=None, help="Keeps (and reuses) each run here.")
  args = parser.parse_args()
  if "TFDS_DATA_DIR" not in os.environ:
    raise SystemExit("Set TFDS_DATA_DIR to where MNIST is prepared for TFDS.")

  root = args.workdir or tempfile.mkdtemp(prefix="mnist_table1_")
  header = (f"{'method':8} {'paper':>6} {'1-NN':>6} {'cosine':>6} {'penult.':>7} "
            f"{'epochs':>6} {'minutes':>7}")
  rows, pixels = [], None
  for method in args.methods.split(","):
    workdir = os.path.join(root, f"{method}_{args.schedule}")
    seconds = train(method, args.schedule, args.epochs, args.probe, workdir)
    metrics = final_metrics(workdir)
    with open(os.path.join(workdir, "config.json")) as f:
      batch_size = json.load(f)["batch_size"]
    epochs = metrics["step"] * batch_size / MNIST_TRAIN_EXAMPLES
    pixels = metrics["knn_1_accuracy_pixels"]
    name, paper = PAPER[method]
    penultimate = metrics.get("knn_1_accuracy_penultimate")
    rows.append(f"{name:8} {paper:6.2f} {100 * metrics['knn_1_accuracy']:6.2f} "
                f"{100 * metrics['knn_1_accuracy_cosine']:6.2f} "
                f"{'-' if penultimate is None else f'{100 * penultimate:.2f}':>7} "
                f"{epochs:6.1f} {seconds / 60:7.1f}")
    print(f"{method} done: {rows[-1]}", flush=True)
  print(f"\nPermutation-invariant MNIST, 1-NN test accuracy (%), schedule '{args.schedule}'; "
        f"raw pixels {100 * pixels:.2f}; runs in {root}")
  print(header)
  print("\n".join(rows))


if __name__ == "__main__":
  main()
