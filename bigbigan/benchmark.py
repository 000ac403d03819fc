"""Times the BigBiGAN update on this machine's devices and prints JSON with its MFU; or,
with `--pipeline`, the input pipeline alone.

    python -m bigbigan.benchmark --config=configs/biggan.py:tiny [--peak_tflops=790] \
        [--steps=10] [--config.batch_size=256]
    python -m bigbigan.benchmark --config=configs/biggan.py --pipeline

Builds the state and the jitted update of `bigbigan_steps.py` for the config (the global
batch over every device's `data` shard), feeds it random uint8 images already on the
devices (the input pipeline is not measured), and reports:
- `compile_seconds`, `median_step_seconds` (over `--steps` after two warm-up steps);
- `iteration_seconds_on_device`, `_no_prefetch`, `_prefetch`: seconds per iteration of a
  loop dispatched as the trainer's (no wait between steps) whose batch is already on the
  devices, or comes from host memory transferred when the step asks for it, or 2 batches
  ahead (`sharding.prefetch_to_mesh`, as train.py does): with prefetch the transfer hides
  behind the step;
- `images_per_second` (real images the update consumes: d_steps x batch_size per step) in
  total and per device;
- `flops_per_step` from XLA's cost analysis of the compiled update (one device's program),
  `tflops_per_second_per_device`, and `mfu` against `--peak_tflops` per device if given.

`--pipeline` decodes synthetic 500x375 JPEGs (ImageNet's typical size) and applies the
training preprocessing of data/images.py at the encoder's resolution (random-resized crop,
resize, flip) with tf.data on every CPU core, and reports images per second in total and per
core: how many cores keep the devices fed.
"""

import itertools
import json
import statistics
import sys
import time

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from bigbigan import bigbigan_steps, sharding, train
from bigbigan.errors import BigBiganError, ConfigError
from bigbigan.summary import xla_flops



def benchmark(config, steps: int = 10, peak_tflops=None) -> dict:
  """Compiles and times the update for `config`; returns the measurements."""
  mesh = sharding.make_mesh()
  if config.batch_size % mesh.devices.size:
    raise ConfigError(f"config.batch_size={config.batch_size} does not divide over "
                      f"{mesh.devices.size} devices: use a multiple of {mesh.devices.size}")
  state, train_step = bigbigan_steps.create_state_and_step(config, mesh)
  side = config.encoder.resolution if config.encoder.kind != "none" else config.resolution
  shape = (config.d_steps, config.batch_size, side, side, 3)
  images = jax.device_put(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8),
                          bigbigan_steps.image_sharding(mesh))

  start = time.perf_counter()
  compiled = train_step.lower(state, images).compile()
  compile_seconds = time.perf_counter() - start
  flops = xla_flops(compiled)

  times = []
  for i in range(steps + 2):
    start = time.perf_counter()
    state, metrics = compiled(state, images)
    jax.block_until_ready((state, metrics))
    if i >= 2:  # Warm-up steps are not timed.
      times.append(time.perf_counter() - start)
  step_seconds = statistics.median(times)
  fed = {}
  for name, batches in _host_fed_batches(images, mesh).items():
    fed[f"iteration_seconds_{name}"], state = _iteration_seconds(compiled, state, batches,
                                                                 steps)
  devices = mesh.devices.size
  images_per_second = config.d_steps * config.batch_size / step_seconds
  tflops = flops / step_seconds / 1e12
  return {
      "device": jax.devices()[0].device_kind, "devices": devices,
      "batch_size": config.batch_size, "d_steps": config.d_steps,
      "compute_dtype": config.compute_dtype,
      "compile_seconds": round(compile_seconds, 2),
      "median_step_seconds": step_seconds,
      **fed,
      "images_per_second": images_per_second,
      "images_per_second_per_device": images_per_second / devices,
      "flops_per_step": flops,
      "tflops_per_second_per_device": tflops,
      "mfu": tflops / peak_tflops if peak_tflops else None,
      "finite": bool(all(np.isfinite(v) for v in jax.device_get(metrics).values())),
  }


def _host_fed_batches(images: jax.Array, mesh) -> dict:
  """Iterators of the batch as the trainer gets it: host uint8 rows, transferred each step
  (through `prefetch_to_mesh`, 2 ahead as in train.py, or not at all ahead), or the
  batch already on the devices."""
  host_rows = [np.array(jax.device_get(images)) + i for i in range(3)]  # Distinct buffers.
  host = lambda: itertools.cycle(host_rows)  # pylint: disable=unnecessary-lambda-assignment
  axis = bigbigan_steps.IMAGE_BATCH_AXIS
  return {"on_device": itertools.repeat(images),
          "no_prefetch": sharding.prefetch_to_mesh(host(), mesh, axis, size=0),
          "prefetch": sharding.prefetch_to_mesh(host(), mesh, axis, size=train.DEVICE_PREFETCH)}


def _iteration_seconds(compiled, state, batches, steps: int):
  """Seconds per training iteration (fetching the batch + the step), dispatched as the
  trainer does: without waiting for each step, so transfers may overlap the step. Returns
  them and the state (the update donates its input state)."""
  for _ in range(2):  # Warm-up.
    state, _ = compiled(state, next(batches))
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(steps):
    state, _ = compiled(state, next(batches))
  jax.block_until_ready(state)
  return (time.perf_counter() - start) / steps, state


def pipeline_benchmark(resolution: int, batch_size: int = 64, batches: int = 20) -> dict:
  """Images/s of JPEG decoding and BigBiGAN's training preprocessing at `resolution`."""
  import os  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bigbigan.data import images, pipeline  # pylint: disable=g-import-not-at-top
  pipeline.hide_accelerators_from_tensorflow()
  rng = np.random.default_rng(0)
  jpegs = [tf.io.encode_jpeg(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).numpy()
           for _ in range(32)]
  preprocess = images.image_preprocess("imagenet2012", resolution, train=True)
  ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat().enumerate().map(
      lambda index, jpeg: preprocess({"image": tf.io.decode_jpeg(jpeg, channels=3),
                                      pipeline.STREAM_INDEX_KEY: index}),
      num_parallel_calls=tf.data.AUTOTUNE)
  batches_iter = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
  for _ in range(3):  # Warm-up: thread pools and autotuning.
    next(batches_iter)
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(batches_iter)
  seconds = time.perf_counter() - start
  # The cores this process may run on (a container's pinning), which TensorFlow's pools use.
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  images_per_second = batches * batch_size / seconds
  return {"mode": "pipeline", "resolution": resolution, "batch_size": batch_size,
          "image_shape": list(batch["image"].shape[1:]), "cpu_cores": cores,
          "images_per_second": images_per_second,
          "images_per_second_per_core": images_per_second / cores}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    if _PIPELINE.value:
      results = pipeline_benchmark(_CONFIG.value.encoder.resolution)
    else:
      results = benchmark(_CONFIG.value, _STEPS.value, _PEAK_TFLOPS.value)
  except BigBiganError as error:
    print(f"bigbigan.benchmark: error: {error}", file=sys.stderr)
    sys.exit(1)
  json.dump(results, sys.stdout, indent=2)
  print()


if __name__ == "__main__":
  # Defined here, not on import: `benchmark()` is importable beside other tools.
  _CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/biggan.py config.")
  _PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", None,
                                    "Peak TFLOP/s of one device (for MFU).")
  _STEPS = flags.DEFINE_integer("steps", 10, "Timed steps, after two warm-up steps.")
  _PIPELINE = flags.DEFINE_bool("pipeline", False, "Time the input pipeline alone.")
  flags.mark_flags_as_required(["config"])
  app.run(main)
