"""Will the update fit an accelerator? Per-device memory from XLA's analysis of the update
compiled from shapes on this machine (`bigbigan.benchmark --memory`), against the memory of
the devices users train on, and the per-device batch and gradient accumulation a setup
needs.

    python -m bigbigan.benchmark --memory --device_kind=v5e \
        --config=configs/resnet50.py --config.batch_size=128

The predicted peak is XLA's (arguments + outputs - aliased + temporaries) less what
`config.remat` frees: a CPU compile keeps every activation whatever the remat policy, so
the activations that the policy recomputes (`benchmark.saved_activation_bytes` with remat
"none" and with the config's) are taken off. A program fits when the peak leaves
`MEMORY_HEADROOM` of the device for the runtime, its workspaces and fragmentation.

Scaling a prediction to another device count: the state's split leaves
(`sharding.state_shardings`) take 1/N of their bytes per device, everything else per device
is the same for the same per-device batch (`per_device_state_bytes`).
"""

import math
from typing import Any

import jax

from bigbigan import sharding
from bigbigan.errors import ConfigError

GIB = 2**30
# Memory of one JAX device: a TPU v3 core (a v3 chip is two devices), a chip of the later
# TPUs (v4 and v5p chips run their two cores as one device), and the GPUs' memory (GB as
# their makers count it).
DEVICE_MEMORY_BYTES = {
    "v3": 16 * GIB,
    "v4": 32 * GIB,
    "v5e": 16 * GIB,
    "v5p": 95 * GIB,
    "v6e": 32 * GIB,
    "gpu-80gb": 80e9,  # H100, A100 80 GB
    "gpu-141gb": 141e9,  # H200
}
# The share of a device's memory that a predicted peak may take; the rest is for the runtime,
# its workspaces (cuDNN's, XLA's) and fragmentation.
MEMORY_HEADROOM = 0.9


def device_bytes(device_kind: str) -> float:
  """The memory of one device of `device_kind`.

  Raises:
    ConfigError: an unknown kind, naming the known ones.
  """
  if device_kind not in DEVICE_MEMORY_BYTES:
    raise ConfigError(f"--device_kind={device_kind}: unknown; one of "
                      f"{', '.join(DEVICE_MEMORY_BYTES)}")
  return DEVICE_MEMORY_BYTES[device_kind]


def fits(peak_bytes: float, memory_bytes: float) -> bool:
  """Whether a program predicted to peak at `peak_bytes` fits a device of `memory_bytes`."""
  return peak_bytes <= MEMORY_HEADROOM * memory_bytes


def predicted_peak_bytes(analysis: dict) -> int:
  """The peak of `bigbigan.benchmark.memory_analysis`'s `analysis` on an accelerator: XLA's,
  less the activations that the config's remat recomputes rather than keeps."""
  freed = (sum(analysis["saved_activation_bytes_no_remat"].values())
           - sum(analysis["saved_activation_bytes"].values()))
  return analysis["total_bytes"] - freed


def fit(analysis: dict, device_kind: str) -> dict:
  """Whether `analysis`'s update fits a `device_kind` device, with its headroom."""
  memory = device_bytes(device_kind)
  peak = predicted_peak_bytes(analysis)
  usable = MEMORY_HEADROOM * memory
  return {"device_kind": device_kind, "device_bytes": memory, "usable_bytes": usable,
          "predicted_peak_bytes": peak, "fits": fits(peak, memory),
          "headroom_bytes": usable - peak}


def describe(found: dict, remat: str) -> str:
  """One line: `fit`'s verdict."""
  verdict = "fits" if found["fits"] else "does NOT fit"
  return (f"{verdict} a {found['device_kind']} device ({found['device_bytes'] / GIB:.1f} GiB, "
          f"{found['usable_bytes'] / GIB:.1f} usable): predicted peak "
          f"{found['predicted_peak_bytes'] / GIB:.2f} GiB with remat '{remat}', headroom "
          f"{found['headroom_bytes'] / GIB:+.2f} GiB")


def per_device_state_bytes(state_shapes: Any, devices: int) -> int:
  """Bytes of one device's share of the training state (shapes, e.g. jax.eval_shape of the
  initializer) in its layout over `devices` devices (`sharding.split_axis`)."""
  total = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(state_shapes):
    size = leaf.size * leaf.dtype.itemsize
    axis = sharding.split_axis(leaf.shape, devices) if sharding.is_split_field(path) else None
    total += size if axis is None else size // devices
  return total


def accumulation_steps(global_batch: int, devices: int, largest_per_device_batch: int
                       ) -> int:
  """The fewest micro-batches that run `global_batch` on `devices` devices, each micro-batch
  at most `largest_per_device_batch` a device and dividing the batch evenly.

  Raises:
    ConfigError: the batch does not divide over the devices.
  """
  if global_batch % devices:
    raise ConfigError(f"a batch of {global_batch} does not divide over {devices} devices")
  per_device = global_batch // devices
  for steps in range(max(1, math.ceil(per_device / max(1, largest_per_device_batch))),
                     per_device + 1):
    if per_device % steps == 0 and per_device // steps <= largest_per_device_batch:
      return steps
  raise ConfigError(f"no micro-batch of a {per_device}-row per-device batch fits")
