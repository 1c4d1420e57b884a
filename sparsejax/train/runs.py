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
  tokenizer_or_none: Tokenizer | None  # None: a run imported without one (token ids only)
  graphdef: object
  params: dict
  buffers: dict
  step: int

  def model(self) -> GPT:
    return merge(self.graphdef, self.params, self.buffers)

  @property
  def has_tokenizer(self) -> bool:
    return self.tokenizer_or_none is not None

  @property
  def tokenizer(self) -> Tokenizer:
    """The run's tokenizer; stages that need text fail here, in one line, without one."""
    return self.require_tokenizer("this stage")

  def require_tokenizer(self, stage: str) -> Tokenizer:
    if self.tokenizer_or_none is None:
      raise RunError(f"{self.workdir} has no tokenizer, and {stage} needs text: import the model "
                     "again with --tokenizer_dir=DIR (tinypython_2k's encoder.json and "
                     "vocab.bpe), or train the run with sparsejax")
    return self.tokenizer_or_none


def load_run(workdir: str, step: int | None = None, *,
             progress: Callable[[str], None] | None = print) -> TrainedRun:
  """The run's config, tokenizer and parameters at ``step`` (default: the newest checkpoint that
  restores; ``progress`` is told when a damaged newer one is skipped). Reads only: a training run
  may be writing next to it. A run without a tokenizer (imported on token ids) loads; its
  ``tokenizer`` raises."""
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
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise RunError(f"{workdir} has no checkpoints; train it first")
  tokenizer = load_tokenizer(tok_path) if os.path.exists(tok_path) else None
  tx = optim.sparse_adam(cfg.optim, cfg.sparsity, cfg.train.steps)
  graphdef, abstract = train_step.abstract_train_state(cfg.model, tx, seed=cfg.train.seed)
  ckpt = checkpoint.Checkpointer(ckpt_dir, read_only=True)
  try:
    if ckpt.latest_step() is None:
      raise RunError(f"{workdir} has no finished checkpoint; train it first")
    state, meta = ckpt.restore(abstract, step, note=progress)
  finally:
    ckpt.close(quiet=True)
  return TrainedRun(workdir, cfg, tokenizer, graphdef,
                    jax.device_get(state.params), jax.device_get(state.buffers), int(meta["step"]))
