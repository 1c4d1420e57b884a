"""Checkpoints: orbax ``CheckpointManager`` under ``workdir/checkpoints``.

Each step directory holds the full train state (``state``: step, params, Adam moments, buffers) and
a JSON ``meta`` (step, data position, config digest). Saves are asynchronous and atomic (orbax
writes to a temporary directory and renames it when complete), and only the last ``keep`` are kept,
so a crash during a save leaves the previous checkpoint as the latest usable one.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored. The message says which and what to do."""


class Checkpointer:
  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    self.directory = os.path.abspath(directory)
    # cleanup_tmp_directories: a save interrupted by a crash leaves a "<step>.orbax-checkpoint-tmp"
    # directory; it is never a candidate for restore, and is removed when the run restarts.
    # A reader (read_only) touches nothing: a training run may be writing next to it.
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           enable_async_checkpointing=async_save,
                                           cleanup_tmp_directories=not read_only,
                                           read_only=read_only)
    self._mgr = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mgr.all_steps())

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts an asynchronous save of ``state`` and ``meta`` at ``step``."""
    self._mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """(state, meta) at ``step`` (default: the latest), into the structure / shardings of
    ``abstract_state`` (arrays or ``jax.ShapeDtypeStruct``s)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    abstract = jax.tree.map(
        lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=getattr(x, "sharding", None)), abstract_state)
    try:
      out = self._mgr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for damaged files
      raise CheckpointError(
          f"checkpoint {step} in {self.directory} cannot be restored ({type(e).__name__}: "
          f"{str(e).splitlines()[0][:200] if str(e) else ''}); move that step directory away to "
          "resume from an earlier checkpoint") from None
    return out["state"], dict(out["meta"])

  def wait(self) -> None:
    self._mgr.wait_until_finished()

  def close(self) -> None:
    self._mgr.wait_until_finished()
    self._mgr.close()
