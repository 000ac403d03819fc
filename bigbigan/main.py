"""Entry point: `python -m bigbigan.main --config=configs/mixture.py --workdir=DIR`.

Any config field can be overridden on the command line, e.g. `--config.total_steps=5`; an
unknown field is an error ("Did you mean ..."). Multi-host runs pass `--distributed` (and,
off Cloud TPU/SLURM, the coordinator flags) so every process joins one jax.distributed job.

Fine-tuning starts a new run from an exported bundle (python -m bigbigan.export) whose
networks fit the config; a workdir with checkpoints resumes from them instead:

  python -m bigbigan.main --config=configs/bigbigan_base.py:tiny \
      --config.init_from=/tmp/bundles/mnist --workdir=/tmp/finetune
"""

import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from bigbigan import command_line
from bigbigan import distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py[:variant]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, figures.")
_ALLOW_CPU = flags.DEFINE_bool(
    "allow_cpu", False, "Run a full-size config (ImageNet resolution, a ResNet-50 or RevNet "
    "encoder) even where JAX has only the CPU; without it such a run is refused.")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", "workdir", "JAX's persistent compilation cache, which a restarted "
    "run reuses: 'workdir' (<workdir>/compilation_cache; JAX_COMPILATION_CACHE_DIR wins if "
    "set), a directory (local or gs://), or 'off'.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(std_logging.Filter):
  """Drops INFO chatter of the checkpoint and dataset libraries; their warnings still show."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    noisy = any(name in record.pathname
                for name in ("/orbax/", "/tensorstore/", "/tensorflow_datasets/"))
    return record.levelno >= std_logging.WARNING or not noisy


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # TensorFlow is only the input pipeline: keep it off the accelerators JAX uses.
  from bigbigan.data import pipeline  # pylint: disable=g-import-not-at-top
  pipeline.hide_accelerators_from_tensorflow()
  distributed.initialize_if_requested()
  import jax  # pylint: disable=g-import-not-at-top
  from bigbigan import train  # pylint: disable=g-import-not-at-top
  from bigbigan.errors import BigBiganError  # pylint: disable=g-import-not-at-top

  logging.info("JAX process %d of %d, %d devices: %s", jax.process_index(),
               jax.process_count(), jax.device_count(), jax.devices()[0].platform)
  from bigbigan import compilation_cache, platform_check, run_directory  # pylint: disable=g-import-not-at-top
  try:
    if not _ALLOW_CPU.value:
      platform_check.refuse_full_size_on_cpu(_CONFIG.value, jax.default_backend())
    compilation_cache.configure(_COMPILATION_CACHE.value, _WORKDIR.value)
    with distributed.supervised():  # Every process leaves together, or stops together.
      train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except BigBiganError as error:
    print(f"bigbigan: error: {error}", file=sys.stderr)
    sys.exit(1)
  if jax.process_index() == 0:
    print(run_directory.describe_finished_run(_WORKDIR.value))


if __name__ == "__main__":
  app.run(main, flags_parser=command_line.parser("bigbigan"))
