"""JAX's persistent compilation cache for a run: a restarted job loads its programs instead of
compiling them again.

A preempted pod job, or one resubmitted at the end of a SLURM allocation, would otherwise
compile its update and evaluation programs again at every start: minutes for the full-size
networks. By default the cache lives in the run's workdir, `<workdir>/compilation_cache`, so
it follows the run wherever the workdir is, a gs:// bucket included (JAX reads and writes
the cache through etils' epath), and every host of a pod shares it.

`--compilation_cache=DIR` puts it elsewhere (a local disk is quicker to read than a bucket,
but does not outlive a TPU VM), and `--compilation_cache=off` turns it off. Where
`JAX_COMPILATION_CACHE_DIR` is set, JAX's own setting, it is left as it is.
"""

import os
from typing import Optional

import jax
from etils import epath

DEFAULT = "workdir"
OFF = "off"
SUBDIRECTORY = "compilation_cache"


def configure(setting: str, workdir: str) -> Optional[str]:
  """Points JAX's persistent compilation cache where `setting` says; returns the directory
  (None when off).

  Args:
    setting: "workdir" (`<workdir>/compilation_cache`), "off", or a directory (local or a
      URL such as gs://bucket/cache).
    workdir: the run's directory.
  """
  if setting == OFF:
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  if setting == DEFAULT and os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  directory = str(epath.Path(workdir) / SUBDIRECTORY) if setting == DEFAULT else setting
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", directory)
  return directory
