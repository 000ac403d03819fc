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

import sys

from absl import app
from absl import flags

from bigbigan import pretrained, runs
from bigbigan.errors import BigBiganError

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory (config.json, checkpoints).")
_OUT = flags.DEFINE_string("out", None, "The bundle's directory (local or gs://) to write.")
_STEP = flags.DEFINE_string("step", None, "The checkpoint's step, or 'best' (the checkpoint "
                            "kept for the run's selection_metric); default: the latest.")
_WITH_DISCRIMINATOR = flags.DEFINE_bool(
    "with_discriminator", False, "Include D (for `discriminate`; about doubles the size).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing bundle at --out.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  step = {None: "the latest step", "best": "the best step"}.get(_STEP.value,
                                                                 f"step {_STEP.value}")
  print(f"Exporting {step} of {_WORKDIR.value} to {_OUT.value} ...", flush=True)
  try:
    manifest = pretrained.export_run(_WORKDIR.value, _OUT.value, runs.parse_step(_STEP.value),
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
  app.run(main)
