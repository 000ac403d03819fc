"""TensorBoard event files in a workdir that may be on gs://: written through epath, and
rewound when a run resumes, so TensorBoard shows each step once.

    writer = EventFileWriter(workdir)          # clu's SummaryWriter, files published on flush
    keep_events_up_to(workdir, resume_step)    # before a resumed run writes its first event

Writing: clu's SummaryWriter (TensorFlow's summary ops) writes into a local staging
directory, and every `flush` publishes the whole of the current event file to the workdir
with `files.write_whole`. An object store has no append, so the file is uploaded whole each
time, as TensorFlow's own gs:// file does on each flush; once a file passes `roll_bytes` the
next flush starts a new one, which bounds what a flush uploads. Going through epath (and not
TensorFlow's file system) keeps every file of a run on one path API, which tests can
redirect.

Rewinding: a run that resumes from checkpoint s redoes the steps after s; the events that
an earlier run wrote for those steps would show twice (and the stale curve would go on past
the resumed one). `keep_events_up_to` reads every event file of the directory, writes the
events of steps <= s into one new file, and deletes the old files only once the new one is
complete: a crash in between leaves the kept events twice, which the next rewind removes
(a copy is recognised by its identical bytes), but never loses one.
"""

import hashlib
import os
import shutil
import socket
import tempfile
import time
from typing import Any, Mapping, Optional

import tensorflow as tf
from clu import metric_writers
from etils import epath

from bigbigan import files

# A name TensorBoard recognises as an event file (it looks for "tfevents").
EVENT_FILE_MARKER = "tfevents"
# Size after which an event file is closed and the next flush starts a new one.
ROLL_BYTES = 32 << 20


def event_file_name(timestamp: int, tag: str) -> str:
  """events.out.tfevents.<10-digit seconds>.<host>.<tag>.v2: TensorBoard reads a directory's
  event files in name order, which is then the order they were started in."""
  return f"events.out.{EVENT_FILE_MARKER}.{timestamp:010d}.{socket.gethostname()}.{tag}.v2"


def event_files(directory: files.PathLike) -> list[epath.Path]:
  """The event files directly in `directory`, in name order."""
  directory = epath.Path(directory)
  if not directory.exists():
    return []
  return sorted((p for p in directory.iterdir() if EVENT_FILE_MARKER in p.name),
                key=lambda p: p.name)


class EventFileWriter(metric_writers.MetricWriter):
  """clu's SummaryWriter whose event files land in `directory` (local or a URL) on `flush`.

  Args:
    directory: where the event files go (the workdir).
    roll_bytes: start a new event file once the current one is larger.
  """

  def __init__(self, directory: files.PathLike, roll_bytes: int = ROLL_BYTES):
    self._directory = epath.Path(directory)
    self._directory.mkdir(parents=True, exist_ok=True)
    self._roll_bytes = roll_bytes
    self._staging = tempfile.mkdtemp(prefix="bigbigan-events-")
    self._count = 0
    self._timestamp = 0
    self._start_file()

  def _start_file(self) -> None:
    # A fresh local staging subdirectory per file: TensorFlow's writer creates exactly one
    # file there.
    self._count += 1
    self._local = os.path.join(self._staging, str(self._count))
    # Strictly increasing timestamps keep this writer's files in the order they started.
    self._timestamp = max(int(time.time()), self._timestamp + 1)
    self._destination = self._directory / event_file_name(
        self._timestamp, f"{os.getpid()}.{self._count}")
    self._published = 0
    self._writer = metric_writers.SummaryWriter(self._local)

  def _publish(self) -> int:
    """Uploads the current file if it grew since the last upload; returns its size."""
    (name,) = os.listdir(self._local)
    with open(os.path.join(self._local, name), "rb") as f:  # The local staging copy.
      data = f.read()
    if len(data) != self._published:
      files.write_whole(self._destination, data)
      self._published = len(data)
    return len(data)

  def write_summaries(self, step: int, values: Mapping[str, Any],
                      metadata: Optional[Mapping[str, Any]] = None) -> None:
    self._writer.write_summaries(step, values, metadata)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._writer.write_scalars(step, scalars)

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    self._writer.write_images(step, images)

  def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
    self._writer.write_videos(step, videos)

  def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
    self._writer.write_audios(step, audios, sample_rate=sample_rate)

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    self._writer.write_texts(step, texts)

  def write_histograms(self, step: int, arrays: Mapping[str, Any],
                       num_buckets: Optional[Mapping[str, int]] = None) -> None:
    self._writer.write_histograms(step, arrays, num_buckets)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self._writer.write_hparams(hparams)

  def flush(self) -> None:
    self._writer.flush()
    if self._publish() > self._roll_bytes:
      self._writer.close()
      self._start_file()

  def close(self) -> None:
    self._writer.close()
    self._publish()
    shutil.rmtree(self._staging)  # The local staging directory, not the workdir.


def _local_copy(path: epath.Path, scratch: str) -> str:
  """A local file with `path`'s bytes (the file itself when it is local)."""
  if not files.is_url(path):
    return os.fspath(path)
  local = os.path.join(scratch, path.name)
  with open(local, "wb") as f:  # Scratch space on this host.
    f.write(path.read_bytes())
  return local


def _records(local_path: str) -> tuple[list[bytes], bool]:
  """The records of a TFRecord (event) file, and whether it was read to its end.

  A run killed mid-write leaves a truncated last record; the records before it are kept.
  """
  records = []
  try:
    for record in tf.data.TFRecordDataset(local_path):
      records.append(record.numpy())
  except tf.errors.DataLossError:
    return records, False
  return records, True


def keep_events_up_to(directory: files.PathLike, step: int) -> int:
  """Rewrites `directory`'s event files to hold no event of a step after `step`.

  Nothing is rewritten when no file holds such an event (nor a copy of an event, nor a
  truncated record).

  Args:
    directory: the workdir (local or a URL).
    step: the step the run resumes from; its own events are kept.

  Returns:
    The number of events dropped (later steps and copies).
  """
  old = event_files(directory)
  if not old:
    return 0
  with tempfile.TemporaryDirectory(prefix="bigbigan-rewind-") as scratch:
    kept_path = os.path.join(scratch, "kept")
    seen, kept, dropped, damaged = set(), 0, 0, False
    version = tf.compat.v1.Event(wall_time=time.time(), file_version="brain.Event:2")
    with tf.io.TFRecordWriter(kept_path) as kept_file:
      kept_file.write(version.SerializeToString())
      for path in old:
        records, complete = _records(_local_copy(path, scratch))
        damaged |= not complete
        for record in records:
          event = tf.compat.v1.Event.FromString(record)
          if event.WhichOneof("what") == "file_version":
            continue  # Each file starts with one; the new file has its own.
          digest = hashlib.sha256(record).digest()
          if event.step > step or digest in seen:
            dropped += 1
            continue
          seen.add(digest)
          kept_file.write(record)
          kept += 1
    if not dropped and not damaged:
      return 0
    # Named before any file the resumed run starts (EventFileWriter: the current second).
    name = event_file_name(int(time.time()) - 1, f"{os.getpid()}.up-to-step-{step}")
    if kept:
      with open(kept_path, "rb") as f:  # The local scratch file.
        files.write_whole(epath.Path(directory) / name, f.read())
  for path in old:
    if path.name != name:
      path.unlink()
  return dropped
