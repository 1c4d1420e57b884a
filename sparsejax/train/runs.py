"""Opening a trained run directory: its config, tokenizer and latest parameters."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax

from sparsejax.train import checkpoint
from sparsejax.data import dataset as data_lib
from sparsejax.sparse import optim
from sparsejax.train import step as train_step
from sparsejax.train.loop import CONFIG_FILE, read_saved_config
from sparsejax.model.gpt import merge
from sparsejax.model.gpt import GPT
from sparsejax.train.run_config import RunConfig
from sparsejax.data.tokenizer import Tokenizer, load_tokenizer
from sparsejax.utils.errors import ConfigError, UserError


class RunError(UserError):
  """The directory is not a usable training run. The message says what is missing."""


@dataclasses.dataclass
class TrainedRun:
  workdir: str
  config: RunConfig
  tokenizer: Tokenizer
  graphdef: object
  params: dict
  buffers: dict
  step: int

  def model(self) -> GPT:
    return merge(self.graphdef, self.params, self.buffers)


def load_run(workdir: str, step: int | None = None, *,
             progress: Callable[[str], None] | None = print) -> TrainedRun:
  """The run's config, tokenizer and parameters at ``step`` (default: the newest checkpoint that
  restores; ``progress`` is told when a damaged newer one is skipped). Reads only: a training run
  may be writing next to it."""
  if not os.path.isdir(workdir):
    raise RunError(f"{workdir} is not a training run ("
                   f"{'not a directory' if os.path.exists(workdir) else 'no such directory'})")
  config_path = os.path.join(workdir, CONFIG_FILE)
  saved = read_saved_config(config_path)
  if saved is None:
    raise RunError(f"{workdir} is not a training run (no {CONFIG_FILE})")
  try:
    cfg = RunConfig.from_dict(saved)
  except ConfigError as e:
    raise ConfigError(f"{config_path}: {e}") from None
  tok_path = os.path.join(workdir, "data", data_lib.TOKENIZER_FILE)
  if not os.path.exists(tok_path):
    raise RunError(f"{workdir} has no tokenizer ({tok_path})")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise RunError(f"{workdir} has no checkpoints; train it first")
  tokenizer = load_tokenizer(tok_path)
  tx = optim.sparse_adam(cfg.optim, cfg.sparsity, cfg.train.steps)
  graphdef, abstract = train_step.abstract_train_state(cfg.model, tx, seed=cfg.train.seed)
  ckpt = checkpoint.Checkpointer(ckpt_dir, read_only=True)
  try:
    if ckpt.latest_step() is None:
      raise RunError(f"{workdir} has no finished checkpoint; train it first")
    state, meta = ckpt.restore(abstract, step, note=progress)
  finally:
    ckpt.close(quiet=True)
  return TrainedRun(workdir, cfg, tokenizer, graphdef, jax.device_get(state.params),
                    jax.device_get(state.buffers), int(meta["step"]))
