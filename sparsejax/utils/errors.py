"""The error policy's one mechanism: every mistake a user can make derives from :class:`UserError`.

The binaries (:mod:`sparsejax.cli`) print a ``UserError`` as one line ``error: ...`` and exit with
code 1; any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
  """Bad input, configuration or files: the message says what is wrong and where."""


class ConfigError(UserError, ValueError):
  """A configuration value is invalid. The message names the field."""


class FileFormatError(UserError, ValueError):
  """A file exists but cannot be read as what it should be. The message names the file."""
