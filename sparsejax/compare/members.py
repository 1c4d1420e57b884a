"""Training a member's learning-rate sweep, measuring each point, and keeping the best.

Every sweep point is a normal run directory trained (or resumed) by :func:`sparsejax.train.loop.
train`. All points share one dataset, prepared once in ``OUT/data`` and hard-linked into each run
(``data/`` is read-only once built), so every member's held-out loss is measured on the same
held-out windows: the pretraining losses of the family are comparable.

Sizes follow the paper's counting (paper-notes §1.6: 7.4M·e² for the 1x model): *total params*
are the entries of the hidden matrices and the embeddings (``wte``, ``wpe``, ``lm_head``), not
the bigram table, norm gains or biases; *L0* is how many of those entries are nonzero.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Callable

import jax
import numpy as np

from sparsejax.compare.family import MemberSpec, lr_label, point_dir
from sparsejax.data import dataset as data_lib
from sparsejax.sparse.sparsity import SparsityConfig, is_sparse_group, sparsity_spec
from sparsejax.train import loop as trainer
from sparsejax.train import step as train_step
from sparsejax.train.run_config import RunConfig
from sparsejax.train.runs import load_run
from sparsejax.utils.errors import ConfigError
from sparsejax.utils.files import atomic_write_json, read_json

MEASURE_FILE = "compare_measure.json"  # per run: held-out loss and sizes at its final step
HELDOUT_BATCH = 16  # windows per held-out batch (fixed, so runs of any batch size see the same)


@dataclasses.dataclass
class Point:
  """One sweep point: a run directory and what was measured on it (or why it failed)."""

  lr: float
  workdir: str
  heldout_loss: float | None = None
  total_params: int | None = None
  l0: int | None = None
  step: int | None = None
  error: str | None = None

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class Member:
  """A member after its sweep: every point, the kept one (lowest held-out loss), its kind."""

  name: str
  kind: str | None  # "sparse" or "dense" (None when the config could not be read)
  points: list[Point]
  error: str | None = None  # the member failed as a whole (every point failed)

  @property
  def best(self) -> Point | None:
    ok = [p for p in self.points if p.error is None]
    return min(ok, key=lambda p: p.heldout_loss) if ok else None

  @property
  def best_at_sweep_edge(self) -> bool:
    """The kept learning rate is the sweep's smallest or largest: widen the sweep."""
    lrs = sorted(p.lr for p in self.points)
    return self.best is not None and len(lrs) > 1 and self.best.lr in (lrs[0], lrs[-1])

  def to_dict(self) -> dict:
    best = self.best
    return {"name": self.name, "kind": self.kind, "error": self.error,
            "best_lr": best.lr if best else None, "best_at_sweep_edge": self.best_at_sweep_edge,
            "points": [p.to_dict() for p in self.points]}


def model_sizes(params) -> tuple[int, int]:
  """(total params, L0) over the hidden matrices and embeddings (see the module docstring)."""
  spec = sparsity_spec(params)
  counted = SparsityConfig()
  total = l0 = 0
  for s, w in zip(jax.tree.leaves(spec, is_leaf=lambda x: hasattr(x, "group")),
                  jax.tree.leaves(params)):
    if is_sparse_group(s, counted):
      total += int(w.size)
      l0 += int(np.count_nonzero(np.asarray(w)))
  return total, l0


def _cached_measure(workdir: str, tokens: int, seed: int, step: int | None = None) -> dict | None:
  path = os.path.join(workdir, MEASURE_FILE)
  if not os.path.exists(path):
    return None
  m = read_json(path, "a held-out measurement")
  same = m.get("tokens") == tokens and m.get("seed") == seed
  return m if same and (step is None or m.get("step") == step) else None


def heldout_loss(workdir: str, *, tokens: int, seed: int, progress=print) -> dict:
  """Mean next-token loss of the run's latest checkpoint on ``tokens`` held-out tokens (windows
  drawn with ``seed``, so every run with the same data gets the same windows), and its sizes.
  Cached in WORKDIR/compare_measure.json for the checkpoint's step."""
  run = load_run(workdir)
  cached = _cached_measure(workdir, tokens, seed, run.step)
  if cached is not None:
    return cached
  seq, batch = run.config.train.seq_len, HELDOUT_BATCH
  sampler = data_lib.BatchSampler(data_lib.load(os.path.join(workdir, "data")).eval,
                                  batch_size=batch, seq_len=seq, seed=seed)
  n_batches = max(1, -(-tokens // (batch * seq)))
  eval_fn = train_step.make_eval_step(run.graphdef)
  losses = [float(eval_fn(run.params, run.buffers, sampler.batch(i))) for i in range(n_batches)]
  total, l0 = model_sizes(run.params)
  out = {"step": run.step, "tokens": tokens, "seed": seed,
         "measured_tokens": n_batches * batch * seq,
         "heldout_loss": float(np.mean(losses)), "total_params": total, "l0": l0}
  atomic_write_json(os.path.join(workdir, MEASURE_FILE), out, indent=2)
  progress(f"compare: {workdir}: held-out loss {out['heldout_loss']:.4f} on "
           f"{out['measured_tokens']:,} tokens; {total:,} params, L0 {l0:,}")
  return out


def _finished(cfg: RunConfig, workdir: str, tokens: int, seed: int) -> dict | None:
  """The measurement of a point already trained to its last step with this config, if any (so
  a rerun neither rebuilds the model nor reopens the checkpoint)."""
  m = _cached_measure(workdir, tokens, seed, cfg.train.steps)
  path = os.path.join(workdir, "config.json")
  if m is None or not os.path.exists(path):
    return None
  return m if not trainer.config_differences(read_json(path, "a run config"),
                                             cfg.to_dict()) else None


def share_data(shared_dir: str, workdir: str) -> None:
  """Hard-links (or copies, across file systems) the shared dataset into WORKDIR/data, unless the
  run already has one; the trainer then loads it instead of building it again."""
  dst = os.path.join(workdir, "data")
  if os.path.exists(os.path.join(dst, data_lib.MANIFEST)):
    return
  os.makedirs(dst, exist_ok=True)
  # The manifest last: a dataset counts as built only once every shard is there.
  names = sorted(os.listdir(shared_dir), key=lambda n: n == data_lib.MANIFEST)
  for name in names:
    src, out = os.path.join(shared_dir, name), os.path.join(dst, name)
    if os.path.isfile(src) and not os.path.exists(out):
      try:
        os.link(src, out)
      except OSError:
        shutil.copy2(src, out)


def member_kind(cfg: RunConfig) -> str:
  return "sparse" if cfg.sparsity.enabled else "dense"


def train_member(spec: MemberSpec, out_dir: str, data_dir: str, data_config: dict, *,
                 heldout_tokens: int, heldout_seed: int,
                 progress: Callable[[str], None] = print) -> Member:
  """Trains (or resumes) every sweep point of ``spec`` and measures it. A point that fails (a bad
  config, a non-finite loss, ...) is recorded with its error; the others go on."""
  points, kind = [], None
  for i, lr in enumerate(spec.lrs):
    workdir = point_dir(out_dir, spec.name, lr)
    point = Point(lr=lr, workdir=workdir)
    points.append(point)
    label = f"{spec.name} {lr_label(lr)} ({i + 1}/{len(spec.lrs)})"
    try:
      cfg = RunConfig.from_dict(spec.point_config(lr))
      kind = member_kind(cfg)
      if cfg.to_dict()["data"] != data_config:
        raise ConfigError("its data config differs from the family's first member: held-out "
                          "losses would not be comparable")
      m = _finished(cfg, workdir, heldout_tokens, heldout_seed)
      if m is None:
        progress(f"compare: member {label}: training ({kind}) in {workdir}")
        share_data(data_dir, workdir)
        trainer.train(cfg, workdir, progress=lambda line: progress(f"  [{spec.name}] {line}"))
        m = heldout_loss(workdir, tokens=heldout_tokens, seed=heldout_seed, progress=progress)
      else:
        progress(f"compare: member {label}: trained (step {m['step']}), held-out loss "
                 f"{m['heldout_loss']:.4f}")
      point.heldout_loss, point.total_params, point.l0, point.step = (
          m["heldout_loss"], m["total_params"], m["l0"], m["step"])
    except Exception as e:  # noqa: BLE001 - one member's failure is reported, the rest go on
      point.error = f"{type(e).__name__}: {e}"
      progress(f"compare: member {label} FAILED: {point.error}")
  member = Member(spec.name, kind, points)
  if member.best is None:
    member.error = "; ".join(sorted({p.error for p in points if p.error}))
  else:
    progress(f"compare: member {spec.name}: best {lr_label(member.best.lr)}, held-out loss "
             f"{member.best.heldout_loss:.4f}" + (" (at the edge of the sweep)"
                                                  if member.best_at_sweep_edge else ""))
  return member


def prepare_shared_data(data_config: dict, data_dir: str, progress=print) -> None:
  """Builds (or loads) the family's dataset once in ``data_dir``."""
  from sparsejax.train.run_config import build
  data_lib.prepare(build(data_lib.DataConfig, data_config, "data"), data_dir, progress)
