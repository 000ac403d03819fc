"""Test setup: 8 fake CPU devices, a persistent compilation cache and quick compilation, set
before jax loads."""

import importlib.util
import os
import pathlib
import socket
import subprocess

# The tests' programs run a step or two each, so compiling them takes most of the suite's
# time: XLA's CPU backend at LLVM -O0 compiles them about 3x faster (a 60-layer jitted
# gradient: 8.4 s against 23.3 s) for slower code, which these short runs hardly feel; its
# older elementwise emitters a fifth faster again (the tiny BigBiGAN update on 8 devices:
# 10.4 s against 13.4 s).
# XLA reads XLA_FLAGS once, when the first backend starts; the variable is then set back
# without it, so a subprocess gets XLA's default unless it adds FAST_COMPILE itself (those
# that compile more than they run do).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
_XLA_FLAGS = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ["XLA_FLAGS"] = f"{_XLA_FLAGS} {FAST_COMPILE}"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.path.expanduser("~"), ".cache", "bigbigan-jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
# Tests run on the CPU: hide any GPU from JAX and TensorFlow alike, and keep TensorFlow's
# start-up chatter out of the output.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,wrong-import-position

import mnist_mock  # pylint: disable=wrong-import-position
from bigbigan.config_files import apply_overrides, load_config  # pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]
# The compilation cache reads its settings from the environment when jax loads; fail loudly
# if something imported jax first and the 8 devices are missing.
assert jax.device_count() == 8, "tests need XLA_FLAGS set before jax is imported"
os.environ["XLA_FLAGS"] = _XLA_FLAGS


# A test file's expected share of the suite's time, for the order the workers take the files
# in: a slow test (over about 4 s cold, compiling or training) costs about 30 s unless its
# marker says more (`slow(seconds=N)`: the longest ones, measured in a cold run on 2
# cores), another 2 s.
_SLOW_SECONDS, _FAST_SECONDS = 30, 2


def pytest_collection_modifyitems(items):
  """The files with the most expected work first (each file's tests together, in their
  order): `--dist loadfile` hands the workers whole files in this order, so the longest
  start early and the run ends on short ones, rather than one worker finishing a long file
  alone (longest-processing-time-first scheduling)."""
  weight = {}
  for item in items:
    slow = item.get_closest_marker("slow")
    seconds = slow.kwargs.get("seconds", _SLOW_SECONDS) if slow else _FAST_SECONDS
    weight[item.fspath] = weight.get(item.fspath, 0) + seconds
  first_seen = {}
  for index, item in enumerate(items):
    first_seen.setdefault(item.fspath, index)
  position = {id(item): index for index, item in enumerate(items)}
  items.sort(key=lambda item: (-weight[item.fspath], first_seen[item.fspath],
                               position[id(item)]))


def pytest_xdist_auto_num_workers(config):  # pylint: disable=unused-argument
  """`-n auto`: a worker per core this process may run on (`taskset` respected), where
  xdist would count the machine's physical cores."""
  return len(os.sched_getaffinity(0))


def load_script(name: str):
  """benchmarks/<name>.py as a module (benchmarks/ is not a package)."""
  spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# Overrides that shrink the mixture config to seconds on CPU; also passed on the command line.
TINY_OVERRIDES = {
    "batch_size": 16,
    "total_steps": 4,
    "log_every_steps": 2,
    "eval_every_steps": 2,
    "checkpoint_every_steps": 2,
    "eval_samples": 64,
    "mixture.num_train": 512,
    "mixture.num_eval": 64,
    "generator.hidden_sizes": (16, 16),
    "encoder.hidden_sizes": (16, 16),
    "discriminator.hidden_sizes": (16, 16),
}


@pytest.fixture
def tiny_config():
  """A factory: tiny_config(variant="bigan", **overrides with "__" for ".")."""
  def make(variant: str = "bigan", **overrides):
    config = apply_overrides(load_config(f"{REPO}/configs/mixture.py:{variant}"),
                             TINY_OVERRIDES)
    return apply_overrides(config, {k.replace("__", "."): v for k, v in overrides.items()})
  return make


def cli_overrides(overrides=None):
  """TINY_OVERRIDES (updated by `overrides`) as --config.field=value flags."""
  merged = {**TINY_OVERRIDES, **(overrides or {})}
  return [f"--config.{field}={value}" for field, value in merged.items()]


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
  """A TFDS data_dir holding tests/mnist_mock.py's small MNIST, prepared."""
  data_dir = tmp_path_factory.mktemp("tfds")
  mnist_mock.write_dataset(str(data_dir))
  return data_dir


@pytest.fixture
def mock_mnist(mnist_dir, monkeypatch):
  """The small MNIST's data_dir as a config's `data_dir` takes it; TFDS's default data_dir
  for the test too (read at import in this process, TFDS_DATA_DIR in its subprocesses)."""
  monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(mnist_dir))
  monkeypatch.setenv("TFDS_DATA_DIR", str(mnist_dir))
  return str(mnist_dir)


def free_port() -> int:
  """A TCP port on localhost that nothing listens on now (for jax.distributed)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_processes(commands, log_dir, timeout=600) -> None:
  """Runs [(name, argv, env), ...] concurrently; asserts each exits 0 (showing its log).

  Output goes to files, not pipes (a full pipe would block a chatty child), and every child
  still running when one fails is killed.
  """
  processes = []
  try:
    for name, argv, env in commands:
      log = pathlib.Path(log_dir) / f"{name}.log"
      with open(log, "w") as f:
        processes.append((subprocess.Popen(argv, cwd=REPO, env=env, stdout=f,
                                           stderr=subprocess.STDOUT), log))
    for process, log in processes:
      assert process.wait(timeout=timeout) == 0, _log_excerpt(log)
  finally:
    for process, _ in processes:
      if process.poll() is None:
        process.kill()


def _log_excerpt(log: pathlib.Path, chars: int = 3000) -> str:
  """A failed child's log without the list of extension modules that Python's fatal-error
  handler prints last (it would fill the excerpt), first and last `chars` characters."""
  lines = [line for line in log.read_text().splitlines()
           if not line.startswith("Extension modules:")]
  text = "\n".join(lines)
  if len(text) <= 2 * chars:
    return text
  return f"{text[:chars]}\n[...]\n{text[-chars:]}"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
  """A tiny BigBiGAN run's workdir (config.json, one checkpoint) and its exported bundle.

  The state is the initial one with its EMA, its live BatchNorm statistics and its standing
  statistics moved away from the live params, the defaults and each other, so a bundle
  that took the wrong weights or statistics would show. Yields
  {"workdir", "bundle" (with D), "config", "state" (on all 8 devices), "step"}.
  """
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from bigbigan import checkpointing, export, sharding
  from bigbigan.families import bigbigan as bigbigan_family
  # pylint: enable=g-import-not-at-top

  config = mnist_mock.tiny_bigbigan_config()
  mesh = sharding.make_mesh()
  init = bigbigan_family.state_initializer(config, bigbigan_family.build_networks(config))
  state = jax.jit(init, out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)

  def moved(path, value):  # Variances stay positive.
    noise = 0.1 * rng.standard_normal(value.shape).astype(value.dtype)
    return value * (1 + np.abs(noise)) if path[-1].key == "var" else value + noise * 0.1

  move = lambda tree: jax.tree_util.tree_map_with_path(moved, tree)  # noqa: E731
  state = state.replace(
      ema=move(state.ema), standing_stats=move(state.standing_stats),
      encoder=state.encoder.replace(batch_stats=move(state.encoder.batch_stats)),
      generator=state.generator.replace(batch_stats=move(state.generator.batch_stats)))
  state = jax.device_put(state, sharding.replicated(mesh))
  root = tmp_path_factory.mktemp("pretrained")
  workdir, step = root / "run", 7
  workdir.mkdir()
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  checkpointer = checkpointing.Checkpointer(str(workdir), keep=2)
  # Saved from one device: orbax takes ~20 s for the 8-device replicated copy on 2 cores.
  checkpointer.save(step, jax.device_put(state, jax.devices()[0]))
  checkpointer.close()
  bundle = root / "bundle"
  export.export_run(str(workdir), str(bundle), with_discriminator=True)
  return {"workdir": workdir, "bundle": bundle, "config": config, "state": state, "step": step}
