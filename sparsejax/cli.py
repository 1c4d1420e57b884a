"""Shared behaviour of the experiment binaries: quiet logs, one-line errors, exit codes."""

from __future__ import annotations

import sys
from typing import Callable

from absl import app, flags, logging

# Errors a binary reports as one line (``error: ...``, exit code 1) rather than a traceback.
USER_ERRORS = (KeyError, ValueError, OSError, RuntimeError, ImportError)


def parse_flags(argv):
  """absl flag parsing, with a bad flag or --config override reported in one line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    sys.exit(f"error: bad flag: {_clean(e)}")


def _clean(e: BaseException) -> str:
  message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
  if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
    message = message[1:-1]  # KeyError / AttributeError quote their message
  return " ".join(message.replace("\\n", " ").replace("\\'", "'").split())


def run(main: Callable) -> None:
  """``app.run(main)`` with quiet library logs (orbax logs every save at INFO; ``--verbosity=0``
  shows them; orbax also warns on every read-only open) and user errors turned into ``error: ...`` with exit code 1."""

  def wrapped(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.ERROR)
    try:
      main()
    except USER_ERRORS as e:
      sys.exit(f"error: {_clean(e)}")

  app.run(wrapped, flags_parser=parse_flags)
