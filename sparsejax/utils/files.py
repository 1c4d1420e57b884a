"""Atomic writes and JSON reads that name the file.

A write goes to a temporary file unique to this process (``<path>.tmp-<pid>-<random>``) and is
renamed over ``path`` only when complete, so a crash or a full disk never leaves a half-written
file under the real name, and two processes never write into each other's temporary file.
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

from sparsejax.utils.errors import FileFormatError


def temp_path(path: str | os.PathLike) -> str:
  """A sibling temporary name unique to this process and call."""
  return f"{os.fspath(path)}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
  """Writes ``data`` (text as UTF-8) to ``path`` atomically."""
  tmp = temp_path(path)
  try:
    with open(tmp, "wb") as f:
      f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write_json(path: str | os.PathLike, obj: Any, **dump_kwargs) -> None:
  """``json.dump`` to ``path`` atomically (a trailing newline; ``dump_kwargs`` go to json)."""
  atomic_write(path, json.dumps(obj, **dump_kwargs) + "\n")


def atomic_save_npy(path: str | os.PathLike, array) -> None:
  """``numpy.save`` to ``path`` atomically."""
  import io

  import numpy as np
  buf = io.BytesIO()
  np.save(buf, np.asarray(array))
  atomic_write(path, buf.getvalue())


def read_json(path: str | os.PathLike, what: str = "a JSON file",
              error: type[Exception] = FileFormatError) -> Any:
  """``json.load`` of ``path``; a file that is not valid JSON raises ``error`` (default
  :class:`FileFormatError`) naming the file, the line and what the file should have been."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise error(f"{os.fspath(path)}: not valid JSON (line {e.lineno} column {e.colno}: {e.msg}); "
                f"expected {what}") from None
  except UnicodeDecodeError:
    raise error(f"{os.fspath(path)}: not valid JSON (not UTF-8 text); expected {what}") from None
