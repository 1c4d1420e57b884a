"""Checkpoints: orbax ``CheckpointManager`` under ``workdir/checkpoints``.

Each step directory holds the full train state (``state``: step, params, Adam moments, buffers) and
a JSON ``meta`` (step). Saves are asynchronous and atomic (orbax writes to a temporary directory
and renames it when complete), and only the last ``keep`` are kept, so a crash during a save leaves
the previous checkpoint as the latest usable one.

Restoring takes the newest checkpoint that restores. Before reading any array it compares the
checkpoint's tree (paths and shapes, from orbax's metadata) with the structure asked for: a
difference means the model or optimizer changed, which no checkpoint of the run can satisfy, and
is reported as such. A checkpoint whose files are damaged (truncated arrays or manifest) is
skipped; a writer moves it to ``<directory>-damaged/<step>`` (nothing is deleted) so that the step
can be written again, and the caller is told which step was used instead.

A failed save (a full disk) is reported as one :class:`CheckpointError` naming the step and the
last checkpoint known to be complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging as py_logging
import os
import re
import shutil
import sys
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from sparsejax.utils.errors import UserError, os_reason


class CheckpointError(UserError):
  """A checkpoint cannot be written or restored. The message says which and what to do."""


class IncompatibleCheckpointError(CheckpointError):
  """The checkpoints hold another model / optimizer structure than the one asked for."""


def quiet_orbax_logs() -> None:
  """Drops orbax's log records (absl logging) below CRITICAL: a failed save logs the same error
  with a thread traceback four times, which :class:`Checkpointer` reports in one line instead."""
  from absl import logging as absl_logging
  logger = absl_logging.get_absl_logger()
  if not any(isinstance(f, _OrbaxFilter) for f in logger.filters):
    logger.addFilter(_OrbaxFilter())


@contextlib.contextmanager
def orbax_logs_quieted():
  """Hides orbax's log records (below CRITICAL) while the block runs, then restores the logger.

  Opening a run from Python logs three WARNING lines per call ("read_only=True, setting
  save_interval_steps=0", ...) and a dozen INFO lines with verbose absl logging. Records of other
  libraries are untouched, and nothing is hidden when absl's verbosity asks for INFO or more
  (``--verbosity=0`` / ``absl.logging.set_verbosity("info")``).
  """
  from absl import logging as absl_logging
  if absl_logging.get_verbosity() >= absl_logging.INFO:
    yield
    return
  logger = absl_logging.get_absl_logger()
  quiet = _OrbaxFilter()
  logger.addFilter(quiet)
  try:
    yield
  finally:
    logger.removeFilter(quiet)


class _OrbaxFilter(py_logging.Filter):
  def filter(self, record: py_logging.LogRecord) -> bool:
    return (record.levelno >= py_logging.CRITICAL
            or f"{os.sep}orbax{os.sep}" not in (record.pathname or ""))


def _ignore_orphaned_callbacks() -> None:
  """Silences the reads and writes abandoned by a failed restore or save.

  When one array of a restore (or save) fails, orbax's event loop ends while TensorStore still
  completes the other reads (writes). Each completion then calls ``loop.call_soon_threadsafe``
  on the closed loop, and Python prints "RuntimeError: Event loop is closed" with a traceback
  through ``sys.unraisablehook``; each future whose TensorStore error nobody awaited is logged by
  asyncio as "Future exception was never retrieved" with the full TensorStore spec. Hundreds of
  lines, seconds after the restore returned, how many depending on timing. Only those events are
  dropped (an unraisable RuntimeError "Event loop is closed" without object; an asyncio record of
  an unretrieved exception from TensorStore); everything else still reaches the hook and the log.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_sparsejax_filter", False):
    return

  def hook(unraisable):
    if (unraisable.object is None and isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == "Event loop is closed"):
      return
    previous(unraisable)

  hook._sparsejax_filter = True
  sys.unraisablehook = hook
  py_logging.getLogger("asyncio").addFilter(_UnretrievedTensorStoreError())


class _UnretrievedTensorStoreError(py_logging.Filter):
  """Drops asyncio's "<Future|Task|_GatheringFuture> exception was never retrieved" records whose
  exception was raised by orbax's or TensorStore's I/O (its message or a frame of its traceback
  says so); other records pass."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    if exc is None or "exception was never retrieved" not in str(record.msg).split("\n")[0]:
      return True
    return not _from_checkpoint_io(exc)


def _from_checkpoint_io(exc: BaseException) -> bool:
  if "tensorstore" in str(exc).lower():
    return True
  tb = exc.__traceback__
  while tb is not None:
    name = tb.tb_frame.f_code.co_filename
    if f"{os.sep}orbax{os.sep}" in name or f"{os.sep}tensorstore{os.sep}" in name:
      return True
    tb = tb.tb_next
  return False


def _reason(e: BaseException) -> str:
  """A short cause of an orbax / TensorStore failure ("No space left on device")."""
  if isinstance(e, OSError) and e.strerror:
    return e.strerror
  text = str(e)
  code = re.search(r"os_error_code='?(\d+)", text) or re.search(r"\[Errno (\d+)\]", text)
  if code:
    return os.strerror(int(code.group(1)))
  status = re.match(r"([A-Z_]{4,}): ", text)
  item = re.search(r'Error reading "([^"]+)"', text)
  if status and item:
    return f"{status.group(1)} reading {item.group(1)}"
  if status:
    return f"{status.group(1)}: {text.splitlines()[0][len(status.group(0)):][:100]}"
  if "error while reading array" in text:
    return "array data cannot be read"
  first = text.splitlines()[0] if text else ""
  return f"{type(e).__name__}: {first[:120]}" if first else type(e).__name__


def _key_name(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _shapes(tree) -> dict[str, tuple | None]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {".".join(_key_name(k) for k in path): (tuple(leaf.shape) if hasattr(leaf, "shape")
                                                  else None) for path, leaf in leaves}


def structure_differences(saved, wanted) -> list[str]:
  """Differences in leaf paths and shapes between two trees (checkpoint metadata, abstract)."""
  a, b = _shapes(saved), _shapes(wanted)
  out = [(p, f"{p}: not in the checkpoint") for p in set(b) - set(a)]
  out += [(p, f"{p}: only in the checkpoint") for p in set(a) - set(b)]
  out += [(p, f"{p}: shape {a[p]} in the checkpoint, {b[p]} now") for p in set(a) & set(b)
          if a[p] is not None and b[p] is not None and a[p] != b[p]]
  return [line for p, line in sorted(out, key=lambda x: (not x[0].startswith("params"), x[0]))]


class Checkpointer:
  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.read_only = read_only
    _ignore_orphaned_callbacks()  # a failed save or restore abandons reads / writes in flight
    # cleanup_tmp_directories: a save interrupted by a crash leaves a "<step>.orbax-checkpoint-tmp"
    # directory; it is never a candidate for restore, and is removed when the run restarts.
    # A reader (read_only) touches nothing: a training run may be writing next to it.
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           enable_async_checkpointing=async_save,
                                           cleanup_tmp_directories=not read_only,
                                           read_only=read_only)
    try:
      self._mgr = ocp.CheckpointManager(
          self.directory, options=options,
          item_handlers={"state": ocp.StandardCheckpointHandler(),
                         "meta": ocp.JsonCheckpointHandler()})
    except OSError as e:
      raise CheckpointError(f"cannot open the checkpoints in {self.directory} ({os_reason(e)})"
                            ) from None
    self.last_good = self.latest_step()  # newest checkpoint known to be complete
    self._pending: int | None = None  # step of a save that may still be running
    self._failed = False

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._mgr.all_steps())

  # ---------------------------------------------------------------- saving
  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts an asynchronous save of ``state`` and ``meta`` at ``step`` (after the previous save
    finished: its failure is reported here, naming its step)."""
    self.wait()
    self._pending = step
    try:
      self._mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # noqa: BLE001 -- orbax raises many types for a failed write
      raise self._save_error(e) from None

  def wait(self) -> None:
    """Waits for the running save; raises :class:`CheckpointError` if it failed."""
    if self._pending is None:
      return
    try:
      self._mgr.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._save_error(e) from None
    self.last_good, self._pending = self._pending, None

  def _save_error(self, e: BaseException) -> CheckpointError:
    self._failed = True
    good = (f"the last good checkpoint is {self.last_good}" if self.last_good is not None
            else "no checkpoint was written before it")
    return CheckpointError(f"checkpoint {self._pending} could not be written in {self.directory} "
                           f"({_reason(e)}); {good}")

  def close(self, *, quiet: bool = False) -> None:
    """Finishes the running save and closes orbax's threads. ``quiet``: errors are dropped (the
    caller is already reporting one)."""
    try:
      if not self._failed:
        self.wait()
    except CheckpointError:
      if not quiet:
        raise
    finally:
      try:
        self._mgr.close()
      except Exception:  # noqa: BLE001 -- a failed save is reported by wait() already
        if not (quiet or self._failed):
          raise

  # ---------------------------------------------------------------- restoring
  def restore(self, abstract_state: Any, step: int | None = None, *,
              note: Callable[[str], None] | None = None,
              as_saved: tuple[str, ...] = ()) -> tuple[Any, dict]:
    """(state, meta) at ``step``, or by default at the newest checkpoint that restores, into the
    structure / shardings of ``abstract_state`` (arrays or ``jax.ShapeDtypeStruct``s).

    Damaged newer checkpoints are skipped (moved aside unless read-only), and ``note`` gets one
    line saying which and why. Raises :class:`IncompatibleCheckpointError` when the checkpoints
    hold another structure, :class:`CheckpointError` when none restores.

    ``as_saved`` names fields of the (dataclass) state restored in whatever structure the
    checkpoint holds, unchecked: a reader that needs only the parameters opens a run whose
    optimizer state is laid out by another version (``load_run`` passes ``("opt_state",)``)."""
    abstract = jax.tree.map(
        lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=getattr(x, "sharding", None)), abstract_state)
    steps = [step] if step is not None else list(reversed(self.all_steps()))
    if not steps:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    if step is not None and step not in self.all_steps():
      raise CheckpointError(f"no checkpoint {step} in {self.directory} (there are: "
                            f"{', '.join(map(str, self.all_steps())) or 'none'})")
    damaged = []
    for s in steps:
      try:
        state, meta = self._restore_step(s, abstract, as_saved)
      except _Damaged as d:
        damaged.append((s, d.reason))
        continue
      if damaged:
        self._set_aside(damaged, s, note)
      if step is None:
        self.last_good = s
      return state, meta
    listing = "; ".join(f"checkpoint {s}: {r}" for s, r in damaged)
    if step is not None:
      raise CheckpointError(f"checkpoint {step} in {self.directory} cannot be restored ({listing})")
    raise CheckpointError(f"no checkpoint in {self.directory} can be restored ({listing}); move "
                          "the directory away to start the run again")

  def _restore_step(self, step: int, abstract, as_saved: tuple[str, ...] = ()) -> tuple[Any, dict]:
    try:
      saved = self._mgr.item_metadata(step)["state"]
    except Exception as e:  # noqa: BLE001 -- unreadable metadata: damaged
      raise _Damaged(_reason(e)) from None
    if saved is None:
      raise _Damaged("no state metadata")
    if as_saved:
      as_struct = lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype)
      abstract = dataclasses.replace(abstract, **{
          f: jax.tree.map(as_struct, saved[f]) if f in saved else None for f in as_saved})
    diff = structure_differences(saved, abstract)
    if diff:
      more = f"; {len(diff) - 2} more differences" if len(diff) > 2 else ""
      raise IncompatibleCheckpointError(
          f"checkpoint {step} in {self.directory} holds another model / optimizer structure "
          f"({'; '.join(diff[:2])}{more})")
    try:
      out = self._mgr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 -- orbax raises many types for damaged files
      raise _Damaged(_reason(e)) from None
    return out["state"], dict(out["meta"])

  def _set_aside(self, damaged, used: int, note) -> None:
    """Moves damaged checkpoints newer than ``used`` out of orbax's way (a writer must be able to
    save those steps again) and says so."""
    moved = []
    for s, _ in damaged:
      if self.read_only or jax.process_index() != 0:
        continue
      dest = os.path.join(f"{self.directory}-damaged", str(s))
      n = 1
      while os.path.exists(dest):
        dest = os.path.join(f"{self.directory}-damaged", f"{s}-{n}")
        n += 1
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(s)), dest)
      moved.append(dest)
    if moved:
      self._mgr.reload()
    if note is not None:
      what = "; ".join(f"checkpoint {s} cannot be restored ({r})" for s, r in damaged)
      where = f", moved to {os.path.dirname(moved[0])}" if moved else ""
      note(f"{what}{where}; using checkpoint {used}")


class _Damaged(Exception):
  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason
