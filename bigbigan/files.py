"""Writing the workdir's files the same way on a local disk and on an object store (gs://).

Every file a run writes goes through etils' epath (which hands gs:// to TensorFlow's file
system, or to fsspec without TensorFlow). Object stores have no rename and no append, so a
file that changes during a run (metrics.jsonl, config.json, an event file) is written whole
each time: `write_whole` publishes the complete new content in one step on both kinds of
storage, so a reader, or a run killed mid-write, never sees half of it.
"""

import os
import uuid
from typing import Union

from etils import epath

PathLike = Union[str, os.PathLike]


def is_url(path: PathLike) -> bool:
  """True for an object-store URL such as gs://bucket/run, False for a local path."""
  return "://" in os.fspath(path)


def write_whole(path: PathLike, data: Union[bytes, str]) -> None:
  """Replaces the file at `path` with `data` so that readers see the old or the new content.

  An object store publishes an object only once its upload is complete; a local file is
  written beside its destination and renamed over it (atomic on POSIX file systems).
  """
  path = epath.Path(path)
  data = data.encode() if isinstance(data, str) else data
  if is_url(path):
    path.write_bytes(data)
    return
  temporary = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
  try:
    temporary.write_bytes(data)
    temporary.replace(path)
  finally:
    temporary.unlink(missing_ok=True)


def read_text_if_exists(path: PathLike) -> str:
  """The text of the file at `path`, or "" if there is none."""
  path = epath.Path(path)
  return path.read_text() if path.exists() else ""
