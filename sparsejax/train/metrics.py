"""Metrics: one JSON object per logged step in ``metrics.jsonl``, plus TensorBoard if installed.

Only the writing process (process 0) writes; the others get a no-op writer. Rows are appended one
line at a time, so a crash or a full disk can leave a partial last line (no newline): readers skip
it, and a resumed run drops it when it truncates the file to its checkpoint. Any other line that
is not a row is an error naming ``metrics.jsonl:LINE``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from sparsejax.utils.errors import FileFormatError, PathError, os_reason

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
  """Appends ``{"step": s, ...}`` rows to ``workdir/metrics.jsonl`` (and TensorBoard events)."""

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, METRICS_FILE)
    self._file = None
    self._tb = None
    if not enabled:
      return
    try:
      self._file = open(self.path, "a", buffering=1)
    except OSError as e:
      raise PathError(f"{self.path} cannot be written ({os_reason(e)})") from None
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
    try:
      self._file.write(json.dumps(row) + "\n")
    except OSError as e:
      raise PathError(f"{self.path} could not be written at step {step} ({os_reason(e)})"
                      ) from None
    if self._tb is not None:
      for key, value in row.items():
        if key != "step" and isinstance(value, float):
          self._tb.add_scalar(key, value, step)

  def close(self) -> None:
    if self._file is not None:
      try:
        self._file.close()
      except OSError:  # the failed write was reported already; a full disk fails the flush too
        pass
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics(workdir: str) -> list[dict]:
  """All rows of ``workdir/metrics.jsonl``, without a partial last line (a write cut short).

  Raises :class:`FileFormatError` naming ``metrics.jsonl:LINE`` for any other line that is not a
  row, and :class:`PathError` when the file cannot be read (``FileNotFoundError`` when missing).
  """
  path = os.path.join(workdir, METRICS_FILE)
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      text = f.read()
  except FileNotFoundError:
    raise
  except OSError as e:
    raise PathError(f"{path} cannot be read ({os_reason(e)})") from None
  lines = text.split("\n")
  rows = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      ok = isinstance(row, dict) and isinstance(row.get("step"), int)
      problem = "" if ok else "not an object with an integer \"step\""
    except json.JSONDecodeError as e:
      problem = f"not valid JSON: {e.msg} at column {e.colno}"
    if problem:
      if number == len(lines):  # the last line has no newline: a row cut short
        continue
      raise FileFormatError(f"{path}:{number}: {problem}; fix or delete that line")
    rows.append(row)
  return rows
