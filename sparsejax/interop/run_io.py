"""Official model directories ↔ sparsejax run directories.

:func:`import_official` turns a downloaded model directory (``beeg_config.json`` +
``final_model.pt``) into a normal run directory, so every stage that reads a run — ``load_run``,
``eval_tasks``, ``prune``, ``view`` — works on it unchanged::

  workdir/config.json          RunConfig: the model's GPTConfig, and sparsity / optim / loop
                               settings (a sparsejax export's own; else from the released
                               ``pfrac`` and ``expansion_factor``, or the measured density)
  workdir/checkpoints/0/       the parameters as an orbax checkpoint of the trainer's format
                               (step 0: sparsejax trained none of it; Adam moments are zeros)
  workdir/data/                with a tokenizer: the tokenizer and held-out text of the
                               built-in generator (for mean ablation); without one, absent
  workdir/import_report.json   what happened to every checkpoint key, each matrix's density,
                               and the config keys sparsejax does not use (``config_extra``)

:func:`export_run` writes a run (any checkpointed step) back as an official directory:
``final_model.pt`` (written without torch; or ``.safetensors``), ``beeg_config.json`` with only the
official fields, and the side files ``beeg_config.sparsejax.json`` (sparsejax-only model fields),
``sparsejax_run.json`` (sparsity / optim / loop sections, source run and step) and
``tokenizer.json`` (the run's tokenizer), which :func:`import_official` reads back — so import →
export → import gives the same config and bit-identical parameters.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.data import dataset as data_lib
from sparsejax.data import tokenizer as tok_lib
from sparsejax.interop import official
from sparsejax.interop.state_dict import write_state_dict
from sparsejax.model.config import save_beeg_config
from sparsejax.sparse import optim
from sparsejax.sparse.optim import OptimConfig
from sparsejax.sparse.sparsity import SparsityConfig
from sparsejax.train import step as train_step
from sparsejax.train.checkpoint import Checkpointer
from sparsejax.train.loop import LoopConfig
from sparsejax.train.run_config import RunConfig, build
from sparsejax.train.runs import load_run
from sparsejax.utils.errors import ConfigError
from sparsejax.utils.files import atomic_write_json, read_json

RUN_SIDE_FILE = "sparsejax_run.json"
TOKENIZER_FILE = "tokenizer.json"
REPORT_FILE = "import_report.json"
EXPORT_FORMATS = ("pt", "safetensors")
# Sections of the run config a sparsejax export carries in its side file.
_RUN_SECTIONS = {"sparsity": SparsityConfig, "optim": OptimConfig, "train": LoopConfig}
_TINYPYTHON_FILES = ("encoder.json", "vocab.bpe")


def resolve_tokenizer(tokenizer_dir: str | None, src: str) -> tuple[str, str] | None:
  """(DataConfig.tokenizer, tokenizer_path) for a tokenizer location, or None for none.

  ``tokenizer_dir`` may hold the official ``tinypython_2k`` files (``encoder.json`` and
  ``vocab.bpe``) or a sparsejax ``tokenizer.json``, or be such a ``.json`` file. Without it, a
  ``tokenizer.json`` in ``src`` (written by :func:`export_run`) is used; else there is none.
  """
  if tokenizer_dir:
    if os.path.isdir(tokenizer_dir):
      if all(os.path.isfile(os.path.join(tokenizer_dir, f)) for f in _TINYPYTHON_FILES):
        return "tinypython", tokenizer_dir
      if os.path.isfile(os.path.join(tokenizer_dir, TOKENIZER_FILE)):
        return "file", os.path.join(tokenizer_dir, TOKENIZER_FILE)
    elif os.path.isfile(tokenizer_dir) and tokenizer_dir.endswith(".json"):
      return "file", tokenizer_dir
    raise ConfigError(f"tokenizer_dir: {tokenizer_dir} holds neither the tinypython_2k files "
                    f"({' and '.join(_TINYPYTHON_FILES)}) nor a {TOKENIZER_FILE}")
  if os.path.isfile(os.path.join(src, TOKENIZER_FILE)):
    return "file", os.path.join(src, TOKENIZER_FILE)
  return None


def _load_tokenizer(kind: str, path: str):
  return tok_lib.load_tinypython(path) if kind == "tinypython" else tok_lib.load_tokenizer(path)


def run_config_for(model: official.OfficialModel, src: str,
                   tokenizer: tuple[str, str] | None, eval_tokens: int) -> RunConfig:
  """The RunConfig of an imported model (see the module docstring for where each part comes
  from)."""
  cfg = model.config
  sections = {}
  side_path = os.path.join(src, RUN_SIDE_FILE)
  if os.path.isfile(side_path):
    side = read_json(side_path, "a sparsejax run side file", ConfigError)
    sections = {name: build(cls, side[name], name) for name, cls in _RUN_SECTIONS.items()
                if name in side}
  if "sparsity" not in sections:
    pfrac, expansion = cfg.extra.get("pfrac"), cfg.extra.get("expansion_factor")
    if isinstance(pfrac, (int, float)) and isinstance(expansion, (int, float)) and expansion > 0:
      sparsity = SparsityConfig.from_pfrac(pfrac, expansion)
    else:
      density = model.report.group_density(official.HIDDEN)
      sparsity = SparsityConfig(target_density=min(1.0, max(density or 1.0, 1e-6)))
    sections["sparsity"] = dataclasses.replace(sparsity,
                                               enabled=sparsity.target_density < 1.0)
  if "train" not in sections:  # the paper trains with n_ctx 256
    sections["train"] = LoopConfig(steps=1, seq_len=min(256, cfg.block_size))
  data = data_lib.DataConfig()
  if tokenizer is not None:
    data = data_lib.DataConfig(tokenizer=tokenizer[0], tokenizer_path=os.path.abspath(
        tokenizer[1]), train_tokens=max(1, eval_tokens // 10), eval_tokens=eval_tokens)
  # config.json holds only GPTConfig fields (a run config rejects unknown keys); the released
  # config's other keys are kept in import_report.json, and export_run puts them back.
  return RunConfig(model=dataclasses.replace(cfg, extra={}), data=data, **sections)


def import_official(src: str, workdir: str, *, tokenizer_dir: str | None = None,
                    eval_tokens: int = 100_000, reader: str = "safe",
                    progress: Callable[[str], None] = print) -> official.ImportReport:
  """Makes ``workdir`` (new or empty) a run directory holding the official model in ``src``.

  Checks everything before writing anything; on a failure while writing, removes what it wrote.
  Returns the import report (also written to ``workdir/import_report.json``).
  """
  t0 = time.time()
  model = official.load_official(src, reader=reader)
  for line in model.report.lines():
    progress(line)
  tokenizer = resolve_tokenizer(tokenizer_dir, src)
  if tokenizer is not None:
    tok = _load_tokenizer(*tokenizer)
    if tok.vocab_size != model.config.vocab_size:
      raise ConfigError(f"the tokenizer {tokenizer[1]} has {tok.vocab_size} tokens, the model's "
                        f"vocab_size is {model.config.vocab_size}")
  cfg = run_config_for(model, src, tokenizer, eval_tokens)
  if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
    raise ConfigError(f"workdir: {workdir} already exists and is not empty; choose a new one "
                    "(nothing was written)")
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  try:
    if tokenizer is not None:
      dataset = data_lib.prepare(cfg.data, os.path.join(workdir, "data"),
                                 progress)
      progress(f"import: tokenizer {dataset.tokenizer.name} and "
               f"{sum(map(len, dataset.eval)):,} held-out tokens (for mean ablation)")
    else:
      progress("import: no tokenizer (pass --tokenizer_dir=DIR with tinypython_2k's "
               "encoder.json and vocab.bpe): the run works on token ids; evaluating, pruning and "
               "viewing need one")
    atomic_write_json(os.path.join(workdir, "config.json"), cfg.to_dict(), indent=2,
                      sort_keys=True)
    _save_checkpoint(cfg, model.params, model.buffers, os.path.join(workdir, "checkpoints"))
    atomic_write_json(os.path.join(workdir, REPORT_FILE), model.report.to_dict(), indent=2)
    _verify(workdir, model)
  except BaseException:
    if created:
      shutil.rmtree(workdir, ignore_errors=True)
    else:
      for name in os.listdir(workdir):
        p = os.path.join(workdir, name)
        shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)
    raise
  progress(f"import: wrote run {workdir} ({time.time() - t0:.1f}s); its checkpoint holds every "
           "matrix's nonzeros unchanged")
  return model.report


def _save_checkpoint(cfg: RunConfig, params: dict, buffers: dict, directory: str) -> None:
  """The trainer's checkpoint format: a TrainState (step 0, zero Adam moments) and its meta."""
  tx = optim.sparse_adam(cfg.optim, cfg.sparsity, cfg.train.steps)
  params = jax.tree.map(jnp.asarray, params)
  state = train_step.TrainState(step=jnp.zeros([], jnp.int32), params=params,
                                opt_state=tx.init(params),
                                buffers=jax.tree.map(jnp.asarray, buffers))
  ckpt = Checkpointer(directory, keep=1, async_save=False)
  try:
    ckpt.save(0, state, {"step": 0})
  finally:
    ckpt.close()


def _verify(workdir: str, model: official.OfficialModel) -> None:
  """Reads the run back as every stage will and checks that each matrix kept its nonzeros
  (pruning and edge counting read exactly these zeros)."""
  run = load_run(workdir)
  entries = {e.name: e for e in official.official_entries(model.config)}
  trees = {"params": run.params, "buffers": run.buffers}
  for name, row in model.report.matrices.items():
    e = entries[name]
    got = int(np.count_nonzero(official.tree_get(trees[e.collection], e.path)))
    if got != row["nonzero"]:
      raise RuntimeError(f"import: {name} has {got} nonzeros in the written run, "
                         f"{row['nonzero']} in the checkpoint")


def export_run(workdir: str, out_dir: str, *, step: int | None = None, fmt: str = "pt",
               progress: Callable[[str], None] = print) -> str:
  """Writes the run's parameters at ``step`` (default: the latest checkpoint) as an official
  model directory ``out_dir`` (new or empty). Returns the checkpoint file's path."""
  if fmt not in EXPORT_FORMATS:
    raise ConfigError(f"format: must be one of {EXPORT_FORMATS}, got {fmt!r}")
  if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
    raise ConfigError(f"out: {out_dir} already exists and is not empty; choose a new directory "
                    "(nothing was written)")
  run = load_run(workdir, step)
  cfg = run.config
  report_path = os.path.join(workdir, REPORT_FILE)
  model_cfg = cfg.model
  if os.path.isfile(report_path):  # an imported run: the source config's other keys
    extra = read_json(report_path, "an import report").get("config_extra", {})
    model_cfg = dataclasses.replace(model_cfg, extra=dict(extra))
  tensors = official.to_official(run.params, run.buffers, model_cfg)
  created = not os.path.exists(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  checkpoint = os.path.join(out_dir, f"{official.CHECKPOINT_STEM}.{fmt}")
  try:
    write_state_dict(checkpoint, tensors)
    save_beeg_config(model_cfg, os.path.join(out_dir, official.CONFIG_FILE))
    side = {name: dataclasses.asdict(getattr(cfg, name)) for name in _RUN_SECTIONS}
    side["source"] = {"workdir": os.path.abspath(workdir), "step": run.step}
    atomic_write_json(os.path.join(out_dir, RUN_SIDE_FILE), side, indent=2, sort_keys=True)
    if run.has_tokenizer:
      run.tokenizer.save(os.path.join(out_dir, TOKENIZER_FILE))
  except BaseException:
    if created:
      shutil.rmtree(out_dir, ignore_errors=True)
    raise
  progress(f"export: run {workdir} at step {run.step} -> {out_dir} ({len(tensors)} tensors, "
           f"{os.path.getsize(checkpoint):,} bytes in {os.path.basename(checkpoint)})")
  return checkpoint
