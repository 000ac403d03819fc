"""Exports a BigBiGAN run's checkpoint as a bundle that `bigbigan.load` reads.

    python -m bigbigan.export --workdir=/tmp/bigbigan_mnist --out=/tmp/bundles/mnist \
        [--step=N|best] [--with_discriminator] [--overwrite]

`--workdir` may be local or a URL (gs://bucket/run). The run's own config (DIR/config.json)
rebuilds its state; the checkpoint of `--step` (default: the latest; "best": the one kept for
the run's selection metric) is read from the run's checkpoint directory (its config's
`checkpoint_dir`, by default DIR/checkpoints), restored on one device and its inference
weights written (bigbigan/bundle.py: the config, the EMA
encoder and generator with their standing BatchNorm statistics and spectral-norm state, D's
weights with `--with_discriminator`, a format version, a checksum and a README). `--out`
may be local or gs://. An existing `--out` is replaced only with `--overwrite`, and only if
it is a bundle; a failed export leaves it as it was. Run it on one host: it is a
single-process job, and every host that ran it would write the same bundle.
"""

import json
import sys
from typing import Union

import jax
import numpy as np
from absl import app
from absl import flags

from bigbigan import __version__, bundle, command_line, run_directory, sharding
from bigbigan.errors import BigBiganError, ConfigError

# The family whose runs bundles hold (families/bigbigan.py).
BUNDLED_NETWORK = "biggan"


def _readme(manifest: dict, out: str) -> str:
  config = manifest["config"]
  encoder = config["encoder"]
  networks = "\n".join(f"- {name}: {info['parameters']:,} parameters"
                       for name, info in manifest["networks"].items())
  discriminator = ("included (`discriminate(x, z)`, `losses(images)`)"
                   if "discriminator" in manifest["networks"]
                   else "not included (export with --with_discriminator)")
  return f"""# BigBiGAN bundle: step {manifest['step']} of `{manifest['source']}`

Written by `python -m bigbigan.export` (bigbigan {manifest['bigbigan_version']}); format
`{manifest['format']}` version {manifest['format_version']}; content checksum
`{manifest['checksum']}` (bundle.json).

    import bigbigan
    model = bigbigan.load("{out}")
    features = model.encode(images)  # uint8 [N, H, W, 3] or float in [-1, 1]

- Encoder: {encoder['backbone']}-{encoder['depth']} x{encoder['width']} ({encoder['kind']}), \
input {encoder['resolution']}x{encoder['resolution']} RGB (other sizes are resized). `encode` \
returns z_mean, z_stdev and z_sample [N, {config['latent_dim']}], avepool_feat and \
bn_crelu_feat.
- Generator: BigGAN at {config['resolution']}x{config['resolution']}; `generate(z)` takes \
z [N, {config['latent_dim']}] ({config['latent_prior']} prior: `sample_latents(n, \
truncation=None)`) and returns images in [-1, 1]; `reconstruct(images)` is G(E(x)).
- Discriminator: {discriminator}.
- `print(model.describe())` lists every call's inputs and outputs.
- Trained on `{config['dataset']}` (`{config['train_split']}`).

Weights (weights.msgpack): G and E are the moving averages (EMA) that evaluation uses,
with BatchNorm's running statistics and spectral norm's vectors.
{networks}

The run's whole config is in bundle.json ("config").
"""


def export_run(workdir: str, out: str, step: Union[int, str, None] = None,
               with_discriminator: bool = False, overwrite: bool = False) -> dict:
  """Writes the bundle of `workdir`'s checkpoint `step` (None: the latest; "best": the best
  by the run's selection metric) to `out`.

  Returns:
    The bundle's manifest.

  Raises:
    ConfigError: not a BigBiGAN run with an encoder.
    CheckpointError: no (such) checkpoint, or one the config cannot read.
    BundleError: `out` exists (without `overwrite`) or is not a bundle.
  """
  config = run_directory.load_run_config(workdir)
  if config.get("network") != BUNDLED_NETWORK:
    raise ConfigError(f"{workdir} holds a run of config.network={config.get('network')!r}: "
                      "bundles hold BigBiGAN models (configs/bigbigan_base.py, resnet50.py, "
                      "revnet4x.py)")
  if config.encoder.kind == "none":
    raise ConfigError(f"{workdir} trained no encoder (config.encoder.kind='none'): there is "
                      "nothing to encode with; export a run with an encoder")
  if config.num_classes:
    raise ConfigError(f"{workdir} is class-conditional (config.num_classes="
                      f"{config.num_classes}): bundles hold unconditional models (generate "
                      "takes z alone, as the released BigBiGAN's); export an unconditional run")
  # One device is enough to read the weights, and keeps every device free on a training host.
  mesh = sharding.make_mesh(jax.local_devices()[:1])
  step, state, _ = run_directory.restore_run(config, workdir, step, mesh)
  return export_state(config, state, step, str(workdir), out, with_discriminator, overwrite)


def export_state(config, state, step: int, source: str, out: str,
                 with_discriminator: bool = False, overwrite: bool = False) -> dict:
  """Writes the bundle of a BigBiGAN TrainState `state` (as checkpoints hold it: its EMA
  networks with their standing statistics) of `config`'s run at `step` to `out`; `source`
  names where it came from. Returns the bundle's manifest."""
  weights = jax.tree.map(np.asarray, bundle.bundle_weights(state, with_discriminator))
  fields = {
      "bigbigan_version": __version__,
      "step": int(step),
      "source": source,
      "networks": {name: {"parameters": count}
                   for name, count in bundle.parameter_counts(weights).items()},
      "config": json.loads(config.to_json_best_effort()),
  }
  return bundle.write_bundle(out, fields, weights, lambda manifest: _readme(manifest, out),
                             overwrite)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  step = {None: "the latest step", "best": "the best step"}.get(_STEP.value,
                                                                 f"step {_STEP.value}")
  print(f"Exporting {step} of {_WORKDIR.value} to {_OUT.value} ...", flush=True)
  try:
    manifest = export_run(_WORKDIR.value, _OUT.value, run_directory.parse_step(_STEP.value),
                          _WITH_DISCRIMINATOR.value, _OVERWRITE.value)
  except BigBiganError as error:
    print(f"bigbigan: error: {error}", file=sys.stderr)
    sys.exit(1)
  sizes = ", ".join(f"{name} {info['parameters']:,}"
                    for name, info in manifest["networks"].items())
  print(f"Exported step {manifest['step']} of {_WORKDIR.value} to {_OUT.value} "
        f"({sizes} parameters; {manifest['checksum']}).\n"
        f"Load it with: import bigbigan; model = bigbigan.load({_OUT.value!r})")


if __name__ == "__main__":
  # Defined here, not on import: `export_run` is importable beside the other tools.
  _WORKDIR = flags.DEFINE_string("workdir", None,
                                 "The run's directory (config.json, checkpoints).")
  _OUT = flags.DEFINE_string("out", None, "The bundle's directory (local or gs://) to write.")
  _STEP = flags.DEFINE_string("step", None, "The checkpoint's step, or 'best' (the checkpoint "
                              "kept for the run's selection_metric); default: the latest.")
  _WITH_DISCRIMINATOR = flags.DEFINE_bool(
      "with_discriminator", False, "Include D (for `discriminate`; about doubles the size).")
  _OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing bundle at --out.")
  flags.mark_flags_as_required(["workdir", "out"])
  app.run(main, flags_parser=command_line.parser("bigbigan"))
