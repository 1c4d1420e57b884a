"""Ctrl-C while a binary is still importing JAX (before ``sparsejax.cli`` takes over): one line,
exit code 130, no traceback. Imported first by every binary; ``cli.run`` restores Python's
handler (KeyboardInterrupt) once the binary starts its work."""

import os
import signal
import sys


def _interrupted(signum, frame):
  print("interrupted", file=sys.stderr, flush=True)
  os._exit(130)  # nothing has been written yet; nothing to clean up


signal.signal(signal.SIGINT, _interrupted)
