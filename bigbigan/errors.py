"""The errors a user can fix: `main` prints their one-line message and exits non-zero."""


class BigBiganError(Exception):
  """Base class; the message names the problem and the fix."""


class ConfigError(BigBiganError, ValueError):
  """A config field has a value the run cannot use."""


class CheckpointError(BigBiganError, RuntimeError):
  """A checkpoint in the workdir cannot be restored into the configured state."""


class NonFiniteLossError(BigBiganError, FloatingPointError):
  """A training loss became NaN or infinite."""


class DatasetError(BigBiganError, FileNotFoundError):
  """A dataset is not prepared where TFDS looks for it."""


class BundleError(BigBiganError, ValueError):
  """A pretrained-model bundle is missing, incomplete, corrupt or of another format."""


class InputError(BigBiganError, ValueError):
  """Inputs to a loaded model have the wrong shape, dtype or range."""


class WeightsFileError(BigBiganError, ValueError):
  """A weights file the evaluation needs (the FID Inception's) is missing, truncated or of
  another format."""
