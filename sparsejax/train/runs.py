"""Opening a trained run directory: its config, tokenizer and latest parameters."""

from __future__ import annotations

import dataclasses
import json
import os

import jax

from sparsejax.train import checkpoint
from sparsejax.data import dataset as data_lib
from sparsejax.sparse import optim
from sparsejax.train import step as train_step
from sparsejax.model.gpt import merge
from sparsejax.model.gpt import GPT
from sparsejax.train.run_config import RunConfig
from sparsejax.data.tokenizer import Tokenizer, load_tokenizer


class RunError(ValueError):
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


def load_run(workdir: str, step: int | None = None) -> TrainedRun:
  """The run's config, tokenizer and parameters at ``step`` (default: the latest checkpoint).
  A run without a tokenizer (imported on token ids) loads; its ``tokenizer`` raises."""
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise RunError(f"{workdir} is not a training run (no config.json)")
  with open(config_path) as f:
    cfg = RunConfig.from_dict(json.load(f))
  tok_path = os.path.join(workdir, "data", data_lib.TOKENIZER_FILE)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise RunError(f"{workdir} has no checkpoints; train it first")
  tx = optim.sparse_adam(cfg.optim, cfg.sparsity, cfg.train.steps)
  graphdef, abstract = train_step.abstract_train_state(cfg.model, tx, seed=cfg.train.seed)
  ckpt = checkpoint.Checkpointer(ckpt_dir, read_only=True)
  try:
    if ckpt.latest_step() is None:
      raise RunError(f"{workdir} has no finished checkpoint; train it first")
    state, meta = ckpt.restore(abstract, step)
  finally:
    ckpt.close()
  tokenizer = load_tokenizer(tok_path) if os.path.exists(tok_path) else None
  return TrainedRun(workdir, cfg, tokenizer, graphdef,
                    jax.device_get(state.params), jax.device_get(state.buffers), int(meta["step"]))
