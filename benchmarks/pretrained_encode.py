"""Throughput of a loaded bundle: `bigbigan.load(BUNDLE)`'s encode and generate per batch size.

    python -m bigbigan.export --workdir=RUN --out=BUNDLE
    python benchmarks/pretrained_encode.py --bundle=BUNDLE [--batch_sizes 1 64 256 1024]

For each batch size, uint8 images at the encoder's resolution (and z from the prior) go
through `encode` and `generate` as a user calls them: host arrays in, host arrays out,
chunking, padding and transfers included. Prints the first call's time (compilation
included) and the median of `--repeats` further calls, in seconds and images per second.
"""

import argparse
import statistics
import time

import jax
import numpy as np

import bigbigan


def _time(fn, repeats: int) -> tuple[float, float]:
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--bundle", required=True)
  parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 64, 256, 1024])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--max_batch_size", type=int, default=256)
  args = parser.parse_args()

  model = bigbigan.load(args.bundle, max_batch_size=args.max_batch_size)
  print(model)
  print(f"devices: {jax.local_device_count()} x {jax.local_devices()[0].device_kind}; "
        f"chunks of at most {args.max_batch_size}")
  side = model.encoder_resolution
  print("| call | batch | first call (s) | median (s) | images/s |")
  print("| --- | --- | --- | --- | --- |")
  rng = np.random.default_rng(0)
  for batch in args.batch_sizes:
    images = rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
    z = model.sample_latents(batch)
    for name, call in (("encode", lambda: model.encode(images)),
                       ("generate", lambda: model.generate(z))):
      first, median = _time(call, args.repeats)
      print(f"| {name} | {batch} | {first:.3f} | {median:.4f} | {batch / median:,.0f} |",
            flush=True)


if __name__ == "__main__":
  main()
