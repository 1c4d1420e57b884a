"""Atomic writes, JSON reads that name the file, directory locks and stale-output removal.

A write goes to a temporary file unique to this process (``<path>.tmp-<pid>-<random>``) and is
renamed over ``path`` only when complete, so a crash or a full disk never leaves a half-written
file under the real name, and two processes never write into each other's temporary file.
A directory that one process at a time may write (a training run) is held with
:func:`lock_directory`; outputs that a re-run replaces as a set (one file per task) are written
one by one and then :func:`remove_stale_files` drops what the earlier run wrote and this one did
not.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import secrets
from typing import Any, Iterable, Iterator

from sparsejax.utils.errors import FileFormatError, PathError, os_reason

LOCK_FILE = ".lock"


def temp_path(path: str | os.PathLike) -> str:
  """A sibling temporary name unique to this process and call."""
  return f"{os.fspath(path)}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
  """Writes ``data`` (text as UTF-8) to ``path`` atomically. A failure (no such directory, no
  permission, a full disk) is a :class:`PathError` naming ``path``; the old file is untouched."""
  tmp = temp_path(path)
  try:
    with open(tmp, "wb") as f:
      f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, OSError):
      raise PathError(f"{os.fspath(path)} could not be written ({os_reason(e)})") from None
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
  except OSError as e:
    raise PathError(f"{os.fspath(path)}: cannot be read ({os_reason(e)}); expected {what}"
                    ) from None


def check_writable_dir(path: str | os.PathLike, what: str) -> None:
  """Raises :class:`PathError` unless ``path`` is a writable directory or can be created as one
  (its nearest existing ancestor is a writable directory). Creates nothing: an output location
  is checked before the work that fills it, not after."""
  path = os.path.abspath(os.fspath(path))
  probe = path
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise PathError(f"{what} {path}: {probe} is not a directory")
  if not os.access(probe, os.W_OK | os.X_OK):
    reason = "read-only filesystem" if _read_only_mount(probe) else "permission denied"
    raise PathError(f"{what} {path}: {probe} is not writable ({reason})")


def _read_only_mount(path: str) -> bool:
  try:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
  except OSError:
    return False


def make_dir(path: str | os.PathLike, what: str) -> bool:
  """Creates directory ``path`` if needed and checks a file can be written in it; returns whether
  it already existed. Raises :class:`PathError` naming ``what`` and the reason."""
  path = os.fspath(path)
  existed = os.path.isdir(path)
  probe = temp_path(os.path.join(path, ".write-test"))
  try:
    os.makedirs(path, exist_ok=True)
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise PathError(f"{what} {path} is not writable ({os_reason(e)})") from None
  return existed


@contextlib.contextmanager
def lock_directory(directory: str | os.PathLike) -> Iterator[bool]:
  """Holds an exclusive lock on ``directory`` (``flock`` of ``directory/.lock``) for the block.

  A second process gets ``PathError("another process is using DIRECTORY")`` at once instead of
  waiting. The lock is the kernel's: it dies with its process (no stale lock after a crash or
  ``kill -9``), and the empty lock file is never removed while held. Yields True when locked,
  False when the filesystem has no locks (some network mounts), where the caller should warn.
  """
  directory = os.fspath(directory)
  path = os.path.join(directory, LOCK_FILE)
  fd = None
  for _ in range(5):  # the lock file can be replaced between open and flock; take it again
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise PathError(f"cannot lock {directory} ({os_reason(e)})") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise PathError(f"another process is using {directory}: wait for it to finish, or use "
                      "another directory") from None
    except OSError:  # no lock support on this filesystem
      os.close(fd)
      yield False
      return
    try:
      same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)
    fd = None
  if fd is None:
    raise PathError(f"cannot lock {directory}: its lock file keeps being replaced")
  try:
    yield True
  finally:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def remove_stale_files(directory: str | os.PathLike, keep: Iterable[str],
                       pattern: str) -> list[str]:
  """Removes the files in ``directory`` matching ``pattern`` whose names are not in ``keep``:
  what an earlier run wrote and this one did not (a task pruned before, not now). Call it after
  writing the new files, so that a crash in between leaves the old set plus the new, never
  neither. Returns the removed names."""
  directory = os.fspath(directory)
  keep = set(keep)
  removed = []
  for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
    if fnmatch.fnmatch(name, pattern) and name not in keep:
      os.remove(os.path.join(directory, name))
      removed.append(name)
  return removed
