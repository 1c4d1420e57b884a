"""The error policy's one mechanism: every mistake a user can make derives from :class:`UserError`.

The binaries (:mod:`sparsejax.cli`) print a ``UserError`` as one line ``error: ...`` and exit with
code 1; any other exception is a bug and keeps its traceback. A user's path that cannot be read or
written (missing, no permission, a full disk) is a user error too: the code that opens the path
turns the ``OSError`` into a :class:`PathError` naming it (see :func:`os_reason`).
"""

from __future__ import annotations


class UserError(Exception):
  """Bad input, configuration or files: the message says what is wrong and where."""


class ConfigError(UserError, ValueError):
  """A configuration value is invalid. The message names the field."""


class FileFormatError(UserError, ValueError):
  """A file exists but cannot be read as what it should be. The message names the file."""


class PathError(UserError):
  """A path cannot be read, created or written (missing, not a directory, no permission, disk
  full, read-only filesystem), or another process holds it. The message names the path."""


def os_reason(e: OSError) -> str:
  """The reason part of an OSError without its path ("No space left on device")."""
  return e.strerror or str(e) or type(e).__name__
