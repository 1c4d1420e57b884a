"""Shared behaviour of the experiment binaries: quiet logs, one-line errors, exit codes.

The error policy (:mod:`sparsejax.utils.errors`): a :class:`UserError` is printed as one line
``error: ...`` with exit code 1; Ctrl-C exits with code 130 and one line (training saves a
checkpoint first and says so); any other exception is a bug and keeps its full traceback. Bad
flags and config files are user errors too, reported by :func:`parse_flags` in one line that
names the file and line where the config file itself raised.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import traceback
from typing import Callable

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from sparsejax.utils.errors import UserError

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


def parse_flags(argv):
  """absl flag parsing, with a bad flag, --config override or config file reported in one line."""
  try:
    parsed = flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001 -- classified below; bugs are re-raised
    message = _flag_error(e, argv)
    if message is None:
      raise
    _exit(f"error: {message}", EXIT_USER_ERROR)
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if _is_config_file_flag(flag):
      try:
        getattr(flag.value, "to_dict", None)  # an unloadable file is kept as a value that raises
      except OSError as e:                    # IOError when read
        _exit(f"error: --{name}={_config_path(flag)}: cannot load the config file "
              f"({_errno_reason(e)})", EXIT_USER_ERROR)
      if flag.value is not None and not isinstance(flag.value, ml_collections.ConfigDict):
        _exit(f"error: --{name}={_config_path(flag)}: get_config() returned "
              f"{type(flag.value).__name__}, expected a ConfigDict", EXIT_USER_ERROR)
  return parsed


def _is_config_file_flag(flag) -> bool:
  """A flag of ``config_flags.DEFINE_config_file`` (its parser class is not exported)."""
  return type(flag.parser).__name__ == "ConfigFileFlagParser"


def _config_path(flag) -> str:
  try:
    return config_flags.get_config_filename(flag)
  except Exception:  # noqa: BLE001 -- only for the message
    return str(flag.value)


def _errno_reason(e: BaseException) -> str:
  match = re.search(r"\[Errno \d+\] ([^:\n]+)", str(e))
  return match.group(1).strip() if match else _clean(e)


def _chain(e: BaseException) -> list[BaseException]:
  """``e`` and the exceptions it was raised from or while handling, outermost first."""
  out = [e]
  while True:
    last = out[-1]
    nxt = last.__cause__ if last.__cause__ is not None else (
        None if last.__suppress_context__ else last.__context__)
    if nxt is None or nxt in out:
      return out
    out.append(nxt)


def _config_files(argv) -> set[str]:
  """Absolute paths of the config files named on the command line."""
  names = {name for name in flags.FLAGS if _is_config_file_flag(flags.FLAGS[name])}
  out = set()
  for i, arg in enumerate(argv):
    for name in names:
      value = None
      if arg.startswith(f"--{name}="):
        value = arg.split("=", 1)[1]
      elif arg == f"--{name}" and i + 1 < len(argv):
        value = argv[i + 1]
      if value:
        out.add(os.path.abspath(value.split(":", 1)[0]))
  return out


def _flag_error(e: BaseException, argv) -> str | None:
  """The one-line message for a flag-parsing failure, or None when it is a bug (a traceback)."""
  chain = _chain(e)
  origin = chain[-1]
  if isinstance(origin, UserError):
    return _clean(origin)
  if isinstance(origin, SyntaxError):
    return f"{origin.filename} line {origin.lineno}: {origin.msg}"
  files = _config_files(argv)
  if "must have a value other than None" in str(e):  # a required config file returned None
    for name in flags.FLAGS:
      flag = flags.FLAGS[name]
      if _is_config_file_flag(flag) and f"--{name} must have" in str(e) and flag.present:
        return f"--{name}={_config_path(flag)}: get_config() returned None, expected a ConfigDict"
  for frame in reversed(traceback.extract_tb(origin.__traceback__)):
    if os.path.abspath(frame.filename) in files:
      return f"{frame.filename} line {frame.lineno}: {type(origin).__name__}: {_clean(origin)}"
  if any("Error whilst parsing config file" in str(x) for x in chain):
    return None  # raised by our code while a config file ran: a bug
  if isinstance(e, (flags.Error, AttributeError, KeyError, TypeError, ValueError)):
    return f"bad flag: {_clean(e)}"
  return None


def _clean(e: BaseException) -> str:
  message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
  if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
    message = message[1:-1]  # KeyError / AttributeError quote their message
  return " ".join(message.replace("\\n", " ").replace("\\'", "'").split())


def _exit(line: str, code: int):
  sys.stdout.flush()
  print(line, file=sys.stderr, flush=True)
  # os._exit would skip orbax's and absl's atexit handlers; sys.exit runs them.
  sys.exit(code)


def run(main: Callable) -> None:
  """``app.run(main)`` with quiet library logs (orbax logs every save at INFO and its failures with
  thread tracebacks; ``--verbosity=0`` shows them) and the error policy above."""

  signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises KeyboardInterrupt
  verbosity = ("--verbosity", "-v", "--verbosity=", "-v=")
  if not any(a in verbosity[:2] or a.startswith(verbosity[2:]) for a in sys.argv):
    logging.set_verbosity(logging.ERROR)  # also while flags are parsed (config files run then)

  def wrapped(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.ERROR)
      from sparsejax.train import checkpoint
      checkpoint.quiet_orbax_logs()
    try:
      main()
    except UserError as e:
      _exit(f"error: {_clean(e)}", EXIT_USER_ERROR)
    except KeyboardInterrupt as e:
      # os._exit: an interrupt can land while XLA compiles or orbax reads in other threads, and
      # finalizing the interpreter under them can crash. Writes are atomic, and training has
      # saved its checkpoint and closed orbax before Interrupted gets here.
      sys.stdout.flush()
      print(str(e) if str(e) else "interrupted", file=sys.stderr, flush=True)
      os._exit(EXIT_INTERRUPTED)

  app.run(wrapped, flags_parser=parse_flags)
