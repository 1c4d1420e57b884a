"""Metrics: one JSON object per logged step in ``metrics.jsonl``, plus TensorBoard if installed.

Only the writing process (process 0) writes; the others get a no-op writer.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping


class MetricWriter:
  """Appends ``{"step": s, ...}`` rows to ``workdir/metrics.jsonl`` (and TensorBoard events)."""

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self._file = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._file = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter  # optional dependency
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        self._tb = None

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    for key, value in scalars.items():
      value = float(value)
      row[key] = value if math.isfinite(value) else str(value)
    self._file.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for key, value in row.items():
        if key != "step" and isinstance(value, float):
          self._tb.add_scalar(key, value, step)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics(workdir: str) -> list[dict]:
  """All rows of ``workdir/metrics.jsonl``."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]
