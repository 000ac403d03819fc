"""A full-size config on JAX's CPU build is refused before anything runs.

`pip install -e .` brings JAX's CPU build; a GPU or TPU needs its own (README, "Install").
Without it, `python -m bigbigan.main --config=configs/revnet4x.py` would train at a few
images a minute without a word. `main` checks the config against the platform JAX found,
and `--allow_cpu` runs it anyway (a dry run of a cluster job, say).
"""

from typing import Optional

import ml_collections

from bigbigan.errors import ConfigError

# ImageNet resolution (BigBiGAN's G is 128 pixels, its high-resolution E 256).
FULL_SIZE_RESOLUTION = 128
# ResNet-50 and RevNet-50: the paper's encoders (the CPU configs use depth 26).
FULL_SIZE_ENCODER_DEPTH = 50


def full_size_reason(config: ml_collections.ConfigDict) -> Optional[str]:
  """What makes `config` a full-size (accelerator) run, e.g. "E at 256 pixels, a depth-50
  encoder"; None if it is small enough for a CPU."""
  encoder = config.get("encoder") or {}
  reasons = [f"{network} at {resolution} pixels"
             for network, resolution in (("G", config.get("resolution")),
                                         ("E", encoder.get("resolution")))
             if resolution and resolution >= FULL_SIZE_RESOLUTION]
  depth = encoder.get("depth")
  if depth and depth >= FULL_SIZE_ENCODER_DEPTH:
    reasons.append(f"a depth-{depth} encoder")
  return ", ".join(reasons) or None


def refuse_full_size_on_cpu(config: ml_collections.ConfigDict, platform: str) -> None:
  """Raises ConfigError for a full-size config when JAX's platform is the CPU.

  Args:
    config: the run's config.
    platform: `jax.default_backend()` ("cpu", "gpu", "tpu").
  """
  reason = full_size_reason(config)
  if platform == "cpu" and reason:
    raise ConfigError(
        f"a full-size config ({reason}) and JAX runs on the CPU only: install JAX for the "
        "GPU (pip install -U \"jax[cuda12]\") or TPU (pip install -U \"jax[tpu]\"), see the "
        "README's Install, or pass --allow_cpu to run it on the CPU")
