"""Metric writers: clu's (TensorBoard + console) and the workdir's plain `metrics.jsonl`.

Only process 0 writes files; other processes log to their console only.
"""

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging
from clu import metric_writers


class JsonlWriter(metric_writers.MetricWriter):
  """Writes one JSON object per logged step: {"step": N, "<name>": value, ...}.

  Scalars written for the same step (training, evaluation, progress) are merged into one
  line, emitted when a later step arrives or on `flush`.
  """

  def __init__(self, path: str, resume_step: int = 0):
    if os.path.exists(path):
      self._truncate_after(path, resume_step)
    self._file = open(path, "a")
    self._pending: dict[str, Any] = {}

  @staticmethod
  def _truncate_after(path: str, resume_step: int) -> None:
    """Keeps the lines up to `resume_step`: a resumed run redoes the steps after it.

    A line cut short by a killed process is dropped too. The file is replaced atomically,
    so a crash here cannot lose the lines kept.
    """
    kept = []
    with open(path) as f:
      for line in f:
        try:
          if json.loads(line)["step"] <= resume_step:
            kept.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError, TypeError):
          logging.warning("Dropping an unreadable line of %s: %r", path, line[:80])
    with open(path + ".tmp", "w") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if self._pending and self._pending["step"] != int(step):
      self.flush()
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
      self._file.write(json.dumps(self._pending) + "\n")
      self._pending = {}
    self._file.flush()

  def close(self) -> None:
    self.flush()
    self._file.close()


def create_writer(workdir: str, resume_step: int) -> metric_writers.MetricWriter:
  """TensorBoard + console + metrics.jsonl on process 0; nothing on the other processes."""
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  return metric_writers.MultiWriter([
      metric_writers.create_default_writer(workdir, asynchronous=False),
      JsonlWriter(os.path.join(workdir, "metrics.jsonl"), resume_step),
  ])
