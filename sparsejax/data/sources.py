"""Offline corpora besides the built-in generator: real Python trees and user text / JSONL files.

Each source yields documents (strings) in a deterministic order and keeps counts of what it skipped,
so a data manifest can say exactly what went in. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sysconfig
from typing import Iterator

from sparsejax.utils.errors import UserError

MAX_FILE_BYTES = 1_000_000  # larger files are skipped (generated code, data dumps)
USER_SUFFIXES = (".txt", ".jsonl", ".py", ".md")  # what a directory in data.files contributes


class CorpusError(UserError, ValueError):
  """A corpus cannot be read (missing, empty, unusable). The message says which and why."""


@dataclasses.dataclass
class SourceStats:
  files: int = 0  # files read and kept
  duplicates: int = 0  # identical contents already seen
  non_utf8: int = 0  # not decodable as UTF-8
  binary: int = 0  # contains NUL bytes
  too_large: int = 0  # over MAX_FILE_BYTES
  empty: int = 0  # no non-whitespace text
  unreadable: int = 0  # could not be opened (permissions, vanished)
  bad_lines: int = 0  # JSONL lines without usable text

  def skipped(self) -> int:
    return (self.duplicates + self.non_utf8 + self.binary + self.too_large + self.empty
            + self.unreadable)

  def describe_skipped(self) -> str:
    """"2 binary files, 1 empty file, 3 JSONL lines without text" (or "nothing")."""
    big = f"over {MAX_FILE_BYTES:,} bytes"
    parts = [f"{n} {one if n == 1 else many}" for n, one, many in (
        (self.duplicates, "duplicate file", "duplicate files"),
        (self.non_utf8, "non-UTF-8 file", "non-UTF-8 files"),
        (self.binary, "binary file", "binary files"),
        (self.too_large, f"file {big}", f"files {big}"),
        (self.empty, "empty file", "empty files"),
        (self.unreadable, "unreadable file", "unreadable files"),
        (self.bad_lines, "JSONL line without text", "JSONL lines without text")) if n]
    return ", ".join(parts) if parts else "nothing"


def default_python_dirs() -> list[str]:
  """The running interpreter's standard library."""
  return [sysconfig.get_paths()["stdlib"]]


def _walk(root: str, suffixes: tuple[str, ...]) -> list[str]:
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
    out += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(suffixes)]
  return out


def _read_text(path: str, stats: SourceStats, seen: set[str]) -> str | None:
  try:
    if os.path.getsize(path) > MAX_FILE_BYTES:
      stats.too_large += 1
      return None
    with open(path, "rb") as f:
      raw = f.read()
  except OSError:
    stats.unreadable += 1
    return None
  if b"\x00" in raw:
    stats.binary += 1
    return None
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError:
    stats.non_utf8 += 1
    return None
  if not text.strip():
    stats.empty += 1
    return None
  digest = hashlib.sha256(raw).hexdigest()
  if digest in seen:
    stats.duplicates += 1
    return None
  seen.add(digest)
  stats.files += 1
  return text


def python_files(dirs: list[str], stats: SourceStats) -> Iterator[str]:
  """Every ``.py`` file under ``dirs`` (sorted walk), de-duplicated by content."""
  for d in dirs:
    if not os.path.isdir(d):
      raise CorpusError(f"data.python_dirs: no such directory: {d}")
  seen: set[str] = set()
  for d in dirs:
    for path in _walk(d, (".py",)):
      text = _read_text(path, stats, seen)
      if text is not None:
        yield text


def user_files(paths: list[str], stats: SourceStats) -> Iterator[str]:
  """Documents from user files: ``.jsonl`` (one per line: a string or an object's "text"), any
  other file is one document. Directories are walked for .txt, .jsonl, .json, .py, .md files."""
  for p in paths:
    if not os.path.exists(p):
      raise CorpusError(f"data.files: no such file or directory: {p}")
  seen: set[str] = set()
  for p in paths:
    files = _walk(p, USER_SUFFIXES) if os.path.isdir(p) else [p]
    for path in files:
      text = _read_text(path, stats, seen)
      if text is None:
        continue
      if path.endswith(".jsonl"):
        for line in text.splitlines():
          if not line.strip():
            continue
          try:
            obj = json.loads(line)
          except json.JSONDecodeError:
            stats.bad_lines += 1
            continue
          doc = obj if isinstance(obj, str) else (obj.get("text") if isinstance(obj, dict)
                                                  else None)
          if isinstance(doc, str) and doc.strip():
            yield doc
          else:
            stats.bad_lines += 1
      else:
        yield text


def describe_empty(name: str, stats: SourceStats, where: str = "") -> str:
  """The error for a source that produced no document: what was found and why it was skipped."""
  read = stats.files + stats.skipped()
  if not read:
    found = f"no {'/'.join(USER_SUFFIXES) if name == 'files' else '.py'} files found"
    return f"data.{name}: the corpus holds no usable documents ({found}{where})"
  return (f"data.{name}: the corpus holds no usable documents ({read} file"
          f"{'' if read == 1 else 's'} read{where}; skipped: {stats.describe_skipped()})")
