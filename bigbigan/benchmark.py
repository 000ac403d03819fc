"""Times the BigBiGAN update on this machine's devices and prints JSON with its MFU; or,
with `--pipeline`, the input pipeline alone; or, with `--memory`, XLA's memory analysis of
the update, compiled but not run.

    python -m bigbigan.benchmark --config=configs/biggan.py:tiny [--peak_tflops=790] \
        [--steps=10] [--config.batch_size=256]
    python -m bigbigan.benchmark --config=configs/biggan.py --pipeline
    python -m bigbigan.benchmark --config=configs/resnet50.py --memory \
        --config.batch_size=64   # one device: the per-device batch
    python -m bigbigan.benchmark --config=configs/resnet50.py --memory --device_kind=v5e \
        --config.batch_size=16   # and whether it fits a TPU v5e chip (memory_plan.py)

Builds the state and the jitted update of the config's family (families/; the global
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

`--pipeline` decodes synthetic photos (JPEGs of ImageNet's typical size and weight) and
applies the training preprocessing of data/images.py at the encoder's resolution
(random-resized crop, resize, flip) with tf.data on every CPU core, and reports images per
second in total and per core (how many cores keep the devices fed) and the shuffle buffer's
host memory, for images decoded before the shuffle, decoded late (the pipeline's way) and
read from an image folder (`pipeline_benchmark`).

`--memory --device_kind=KIND` adds whether the update fits one device of KIND (v3, v4, v5e,
v5p, v6e, gpu-80gb, gpu-141gb), with its headroom, as a line before the JSON and its "fit"
field (bigbigan/memory_plan.py).
"""

import gc
import itertools
import json
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from bigbigan import command_line, families, memory_plan, sharding
from bigbigan.errors import BigBiganError, ConfigError
from bigbigan.families.bigbigan_update import (IMAGE_BATCH_AXIS, MUTABLE, image_sharding,
                                               network_variables)
from bigbigan.summary import xla_flops


def compile_update(config, mesh, accelerator_program: bool = False) -> tuple[Any, float]:
  """(the update of `config` compiled over `mesh`, seconds it took), from the shapes of the
  state and the images alone: nothing is initialised or allocated, so full-size networks
  and batches that would not fit this machine's memory compile too.

  `accelerator_program`: the program a GPU or TPU runs (the BigBiGAN D steps under their
  `lax.scan`) even where `mesh` is a CPU's, whose own program writes them out: what memory
  predictions for an accelerator must compile."""
  family = families.of(config)
  options = {}
  if accelerator_program and config.network == "biggan":
    options["unroll_d_steps"] = False
  networks = family.build_networks(config)
  shapes = jax.eval_shape(family.state_initializer(config, networks), jax.random.PRNGKey(0))
  state = sharding.abstract_state(shapes, mesh)  # As the trainer lays it out.
  side = config.encoder.resolution if config.encoder.kind != "none" else config.resolution
  images = jax.ShapeDtypeStruct((config.d_steps, config.batch_size, side, side, 3),
                                jnp.uint8, sharding=image_sharding(mesh))
  start = time.perf_counter()
  compiled = family.make_update(config, networks, mesh, **options).lower(
      state, images).compile()
  return compiled, time.perf_counter() - start


COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def collective_counts(compiled) -> dict[str, int]:
  """{collective: how many} in a compiled program's HLO: the synchronous ops, and the -start
  halves of asynchronous ones (GPU and TPU)."""
  hlo = compiled.as_text()
  return {op: hlo.count(f" {op}(") + hlo.count(f" {op}-start(") for op in COLLECTIVES}


def saved_activation_bytes(config, per_device_batch: int) -> dict[str, int]:
  """{network: bytes}: what the training-mode forward of G, E and D keeps for its backward
  pass in one device's share of the E/G step (G on the batch's z, E on its images, D on the
  real and the generated pairs: twice the batch), with the compute-dtype copies of the
  weights it reads: the residuals of `jax.vjp`, found from shapes alone. `config.remat`
  trades these for recomputation. XLA's CPU schedule does not realise that trade (its
  temporaries stay the same with remat), so this figure is what shows it."""
  family = families.of(config)
  networks = family.build_networks(config)
  state = jax.eval_shape(family.state_initializer(config, networks), jax.random.PRNGKey(0))
  rows = {"generator": per_device_batch, "encoder": per_device_batch,
          "discriminator": 2 * per_device_batch}
  saved = {}
  for name, rows_of_network in rows.items():
    module, network = getattr(networks, name), getattr(state, name)
    if module is None:  # The GAN baseline has no encoder.
      continue
    inputs = {key: jax.ShapeDtypeStruct((rows_of_network, *example.shape[1:]), example.dtype)
              for key, example in family.example_inputs(config, name).items()}

    def residuals(network, inputs, module=module):
      def forward(params, inputs):
        variables = network_variables(network, params)
        return module.apply(variables, **inputs, train=True, mutable=MUTABLE,
                            rngs={"latent": jax.random.PRNGKey(0)})[0]
      return jax.vjp(forward, network.params, inputs)[1]

    leaves = jax.tree.leaves(jax.eval_shape(residuals, network, inputs))
    saved[name] = int(sum(leaf.size * leaf.dtype.itemsize for leaf in leaves))
  return saved


def memory_analysis(config) -> dict:
  """XLA's memory analysis of one device's update program for `config` (an accelerator's
  program, compiled for this machine's devices, not run): bytes of the arguments (the state
  and the images), outputs, outputs aliased to (donated) arguments, temporaries, and their
  total, the peak the program needs: arguments + outputs - aliased + temporaries; and the
  activations each network saves for backprop (`saved_activation_bytes`); XLA's FLOP count
  of the program (its cost analysis) and its collectives (`collective_counts`)."""
  mesh = sharding.make_mesh()
  compiled, seconds = compile_update(config, mesh, accelerator_program=True)
  memory = compiled.memory_analysis()
  figures = {"argument_bytes": memory.argument_size_in_bytes,
             "output_bytes": memory.output_size_in_bytes,
             "alias_bytes": memory.alias_size_in_bytes,
             "temp_bytes": memory.temp_size_in_bytes}
  figures["total_bytes"] = (figures["argument_bytes"] + figures["output_bytes"]
                            - figures["alias_bytes"] + figures["temp_bytes"])
  figures["flops"] = xla_flops(compiled)
  per_device_batch = config.batch_size // mesh.devices.size
  # A network keeps the activations of one micro-batch at a time (gradient accumulation).
  rows = per_device_batch // config.get("accumulation_steps", 1)
  saved = saved_activation_bytes(config, rows)
  without_remat = config.copy_and_resolve_references()
  without_remat.remat = "none"
  saved_without_remat = saved_activation_bytes(without_remat, rows)
  return {"device": jax.devices()[0].device_kind, "devices": mesh.devices.size,
          "batch_size": config.batch_size, "per_device_batch": per_device_batch,
          "d_steps": config.d_steps, "compute_dtype": config.compute_dtype,
          "remat": config.get("remat", "none"),
          "compile_seconds": round(seconds, 2), **figures,
          "total_gib": figures["total_bytes"] / 2**30,
          "saved_activation_bytes": saved,
          "saved_activation_gib": sum(saved.values()) / 2**30,
          "saved_activation_bytes_no_remat": saved_without_remat,
          "collectives": collective_counts(compiled)}


def benchmark(config, steps: int = 10, peak_tflops=None, precompiled=None) -> dict:
  """Compiles and times the update for `config`; returns the measurements.

  `precompiled`: `compile_update(config, mesh)`'s result for this machine's mesh, compiled
  beforehand (benchmarks/accelerator_suite.py compiles several configs at once)."""
  mesh = sharding.make_mesh()
  if config.batch_size % mesh.devices.size:
    raise ConfigError(f"config.batch_size={config.batch_size} does not divide over "
                      f"{mesh.devices.size} devices: use a multiple of {mesh.devices.size}")
  compiled, compile_seconds = precompiled or compile_update(config, mesh)
  state, _ = families.create_state_and_update(config, mesh)
  side = config.encoder.resolution if config.encoder.kind != "none" else config.resolution
  shape = (config.d_steps, config.batch_size, side, side, 3)
  images = jax.device_put(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8),
                          image_sharding(mesh))
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
  axis = IMAGE_BATCH_AXIS
  return {"on_device": itertools.repeat(images),
          **{name: sharding.prefetch_to_mesh(itertools.cycle(host_rows), mesh, axis, size=size)
             for name, size in (("no_prefetch", 0), ("prefetch", sharding.DEVICE_PREFETCH))}}


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


# ImageNet's photos average about 400x350 pixels and 110 KB as JPEG.
PHOTO_HEIGHTS, PHOTO_WIDTHS = (280, 420), (320, 480)


def synthetic_photos(count: int, seed: int = 0) -> list[bytes]:
  """`count` JPEGs of ImageNet-like sizes (height 280..420, width 320..480, 350x400 on
  average) and weights (colour fields with grain, quality 90 and 4:2:0 chroma as most
  photos: about 105 KB each, ImageNet's ~110 KB); the work of decoding a JPEG grows with
  its weight, and pure noise would weigh as no photo does."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  photos = []
  for _ in range(count):
    height, width = int(rng.integers(*PHOTO_HEIGHTS)), int(rng.integers(*PHOTO_WIDTHS))
    field = rng.uniform(0, 255, (1, height // 4 + 2, width // 4 + 2, 3)).astype(np.float32)
    pixels = tf.image.resize(field, [height, width], method="bicubic")[0].numpy()
    pixels += rng.normal(0.0, 25.0, pixels.shape)
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    photos.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
  return photos


def _images_per_second(make_iterators: dict, batches: int, batch_size: int,
                       rounds: int) -> dict[str, float]:
  """{name: median images/s} over `rounds` rounds that time `batches` batches of a fresh
  iterator of each path in turn (a load that other processes put on the machine weighs on
  every path alike). Only the timed path's iterator exists meanwhile: one left alive would
  fill its prefetch buffers in the background and then seem faster than it is."""
  speeds = {name: [] for name in make_iterators}
  for _ in range(rounds):
    for name, make_iterator in make_iterators.items():
      iterator = make_iterator()
      for _ in range(5):  # Warm-up: thread pools, autotuning, the shuffle buffer's filling.
        next(iterator)
      start = time.perf_counter()
      for _ in range(batches):
        next(iterator)
      speeds[name].append(batches * batch_size / (time.perf_counter() - start))
      del iterator
      gc.collect()  # Stops its threads before the next path is timed.
  return {name: statistics.median(values) for name, values in speeds.items()}


def pipeline_benchmark(resolution: int, batch_size: int = 64, batches: int = 20,
                       photo_count: int = 256, shuffle_buffer_size: int = 256,
                       rounds: int = 3) -> dict:
  """Images/s of BigBiGAN's training input (JPEG decoding, random-resized crop, resize and
  flip at `resolution`, data/images.py) on all the CPU cores this process may use, per core,
  and what the shuffle buffer holds, for three ways of feeding it:

  - "decode_before_shuffle": images decoded as TFDS does by default, then shuffled, then
    cropped (the shuffle buffer holds decoded images);
  - "decode_late": the pipeline's way for a TFDS dataset (SkipDecoding): JPEG bytes
    shuffled, then only the crop window decoded (`decode_and_crop_jpeg`);
  - "folder": the same photos as files of a "folder:" dataset through
    `pipeline.train_batches` (the buffer holds paths; files read after the shuffle).

  The photos are `synthetic_photos(photo_count)` held in memory (the folder's in a temporary
  directory, in the page cache after the first read), so the figures are the CPU's work, not
  a disk's. Each figure is the median of `rounds` timings of `batches` batches, the paths
  taking turns. The buffer's memory is given for `pipeline.DEFAULT_SHUFFLE_BUFFER_SIZE`
  examples (from the mean size of what it holds); `shuffle_buffer_size` is the smaller
  buffer of the timed runs.
  """
  import os  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bigbigan.data import images, pipeline  # pylint: disable=g-import-not-at-top
  pipeline.hide_accelerators_from_tensorflow()
  photos = synthetic_photos(photo_count)
  shapes = [tf.image.extract_jpeg_shape(photo).numpy() for photo in photos]
  preprocess = images.image_preprocess("imagenet2012", resolution, train=True)
  parallel = dict(num_parallel_calls=tf.data.AUTOTUNE)

  def batched(ds: tf.data.Dataset):
    ds = ds.enumerate().map(
        lambda index, image: preprocess({"image": image, pipeline.STREAM_INDEX_KEY: index}),
        **parallel)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()

  stored = tf.data.Dataset.from_tensor_slices(photos).repeat()
  decoded = stored.map(lambda photo: tf.io.decode_jpeg(photo, channels=3), **parallel)
  with tempfile.TemporaryDirectory() as directory:
    paths = []
    for i, photo in enumerate(photos):
      paths.append(os.path.join(directory, f"photo_{i:05d}.jpg"))
      with open(paths[-1], "wb") as f:
        f.write(photo)
    dataset = f"folder:{directory}"
    speeds = _images_per_second({
        "decode_before_shuffle": lambda: batched(decoded.shuffle(shuffle_buffer_size, seed=0)),
        "decode_late": lambda: batched(stored.shuffle(shuffle_buffer_size, seed=0)),
        "folder": lambda: pipeline.train_batches(
            dataset, "train", batch_size, seed=0,
            preprocess=images.image_preprocess(dataset, resolution, train=True),
            process_index=0, process_count=1, shuffle_buffer_size=shuffle_buffer_size),
    }, batches, batch_size, rounds)
  # The bytes of one buffered example: a decoded image, a JPEG, a path and its int64 label.
  element_bytes = {"decode_before_shuffle": np.mean([h * w * 3 for h, w, _ in shapes]),
                   "decode_late": np.mean([len(photo) for photo in photos]),
                   "folder": np.mean([len(path.encode()) + 8 for path in paths])}
  # The cores this process may run on (a container's pinning), which TensorFlow's pools use.
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  results = {"mode": "pipeline", "resolution": resolution, "batch_size": batch_size,
             "cpu_cores": cores, "photos": photo_count,
             "photo_mean_height": float(np.mean([shape[0] for shape in shapes])),
             "photo_mean_width": float(np.mean([shape[1] for shape in shapes])),
             "photo_mean_kilobytes": float(element_bytes["decode_late"] / 1e3),
             "shuffle_buffer_examples": pipeline.DEFAULT_SHUFFLE_BUFFER_SIZE}
  for name, speed in speeds.items():
    results[name] = {
        "images_per_second": speed, "images_per_second_per_core": speed / cores,
        "shuffle_buffer_megabytes": float(
            element_bytes[name] * pipeline.DEFAULT_SHUFFLE_BUFFER_SIZE / 1e6)}
  results["decode_late_speedup"] = speeds["decode_late"] / speeds["decode_before_shuffle"]
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    families.validate_networks(_CONFIG.value)
    if _PIPELINE.value:
      results = pipeline_benchmark(_CONFIG.value.encoder.resolution)
    elif _MEMORY.value:
      results = memory_analysis(_CONFIG.value)
      if _DEVICE_KIND.value:
        results["fit"] = memory_plan.fit(results, _DEVICE_KIND.value)
        print(memory_plan.describe(results["fit"], results["remat"]))
    elif _DEVICE_KIND.value:
      raise ConfigError("--device_kind goes with --memory: the fit of a compiled program")
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
  _MEMORY = flags.DEFINE_bool("memory", False, "Print XLA's memory analysis of the update "
                              "compiled for config.batch_size, without running it.")
  _DEVICE_KIND = flags.DEFINE_enum(
      "device_kind", None, list(memory_plan.DEVICE_MEMORY_BYTES),
      "With --memory: say whether the update fits one device of this kind, with its headroom.")
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=command_line.parser("bigbigan.benchmark"))
