"""Metric writers: clu's (TensorBoard + console) and the workdir's plain `metrics.jsonl`.

Only process 0 writes files; other processes log to their console only. Every file goes
through etils' epath (bigbigan/files.py, bigbigan/tensorboard_events.py), so a workdir on
gs:// works as a local one does.
"""

import json
from typing import Any, Iterable, Mapping

import jax
import numpy as np
from absl import logging
from clu import metric_writers
from etils import epath

from bigbigan import files
from bigbigan import tensorboard_events

METRICS_FILE = "metrics.jsonl"


def append_jsonl(path: files.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
  """Adds one JSON line per record to the file at `path` (created if missing).

  Object stores have no append: the file is read and written whole (files.write_whole),
  which also keeps lines that another program (bigbigan.evaluate) added meanwhile.
  """
  lines = "".join(json.dumps(dict(record)) + "\n" for record in records)
  if lines:
    files.write_whole(path, files.read_text_if_exists(path) + lines)


def keep_lines_up_to(path: files.PathLike, step: int) -> None:
  """Keeps the lines of the JSON-lines file at `path` whose "step" is at most `step`.

  A resumed run redoes the steps after `step`. A line cut short by a killed process is
  dropped too. The file is read, then replaced whole (no rename, no append: it may be on an
  object store), so a crash here cannot lose the lines kept.
  """
  path = epath.Path(path)
  if not path.exists():
    return
  text, kept = path.read_text(), []
  for line in text.splitlines():
    try:
      if json.loads(line)["step"] <= step:
        kept.append(line + "\n")
    except (ValueError, KeyError, TypeError):
      logging.warning("Dropping an unreadable line of %s: %r", path, line[:80])
  if "".join(kept) != text:
    files.write_whole(path, "".join(kept))


class JsonlWriter(metric_writers.MetricWriter):
  """Writes one JSON object per logged step: {"step": N, "<name>": value, ...}.

  Scalars written for the same step (training, evaluation, progress) are merged into one
  line. Lines wait in memory and are added to the file on `flush` (the trainer flushes at
  each logging step) and `close`: an object store cannot keep a file open for appending, so
  each flush reads the file and writes it whole (append_jsonl). The file is small (a line
  per logging step), and re-reading it rather than keeping a copy in memory keeps the lines
  that bigbigan.evaluate may add while the run trains.
  """

  def __init__(self, path: files.PathLike, resume_step: int = 0):
    self._path = epath.Path(path)
    keep_lines_up_to(self._path, resume_step)
    self._lines: list[dict] = []
    self._pending: dict[str, Any] = {}

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if self._pending and self._pending["step"] != int(step):
      self._lines.append(self._pending)
      self._pending = {}
    self._pending.setdefault("step", int(step))
    self._pending.update({name: np.asarray(value).item() for name, value in scalars.items()})

  def write_summaries(self, step, values, metadata=None): pass
  def write_images(self, step, images): pass
  def write_videos(self, step, videos): pass
  def write_audios(self, step, audios, *, sample_rate): pass
  def write_texts(self, step, texts): pass
  def write_histograms(self, step, arrays, num_buckets=None): pass
  def write_hparams(self, hparams): pass

  def flush(self) -> None:
    if self._pending:
      self._lines.append(self._pending)
      self._pending = {}
    append_jsonl(self._path, self._lines)
    self._lines = []

  def close(self) -> None:
    self.flush()


def create_writer(workdir: str, resume_step: int) -> metric_writers.MetricWriter:
  """TensorBoard + console + metrics.jsonl on process 0; nothing on the other processes.

  A resumed run's files are first rewound to `resume_step` (the events and lines of later
  steps dropped), as the run redoes those steps.
  """
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  tensorboard_events.keep_events_up_to(workdir, resume_step)
  return metric_writers.MultiWriter([
      metric_writers.LoggingWriter(),
      tensorboard_events.EventFileWriter(workdir),
      JsonlWriter(epath.Path(workdir) / METRICS_FILE, resume_step),
  ])


def create_evaluation_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard + console, for results written beside a run's own (bigbigan.evaluate)."""
  return metric_writers.MultiWriter([metric_writers.LoggingWriter(),
                                     tensorboard_events.EventFileWriter(workdir)])


def write_evaluation(writer: metric_writers.MetricWriter, step: int, results: dict) -> None:
  """An evaluation's results: scalars, and images ([1, H, W, C] arrays) for TensorBoard."""
  writer.write_scalars(step, {k: v for k, v in results.items() if np.ndim(v) == 0})
  images = {k: v for k, v in results.items() if np.ndim(v) == 4}
  if images:
    writer.write_images(step, images)
