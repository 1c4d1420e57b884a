"""The faithfulness suite: is a pruned circuit the model's own mechanism, or an artefact?

A circuit at the target loss proves little by itself (Drori's replication, paper-notes §7). Each
check below looks for one way a circuit can reach the target without being what the model does,
on the task's *test* pairs (never seen by the search), for the node circuit:

* **frozen norms** — the circuit again with *every* norm (ln_1, ln_2 of every block and ln_f, at
  every position) dividing by the unpruned model's normaliser ``GPT.norm_scales`` (LayerNorm still
  centres: a linear map). Ablating nodes can shrink the residual stream, and a norm then scales
  what is left *up*: a circuit can reach the target by weakening the stream instead of computing
  the answer. ``loss_frozen_norms`` is the loss without that lever; ``norm_ratio`` is, per norm,
  the geometric mean over the scored sequences' positions of circuit normaliser ÷ full-model
  normaliser (< 1: the circuit shrinks the stream there). Flags: ``fails_frozen_norms`` (at the
  target as searched, not with frozen norms) and ``shrinks_stream`` (some ratio below
  ``NORM_SHRINK_BELOW``).
* **trivially solvable** — the loss with zero nodes kept: every node mean-ablated, only the
  embedding, the bigram table and the direct path left. A task at the target with zero nodes is
  flagged ``trivially_solvable`` and left out of the headline geometric means (:func:`headline`).
* **off-distribution** — the circuit's loss and the full model's on the task's ``ood`` split
  (held-out templates, longer contexts, distractors): a circuit that matches the model on test but
  not on ood learned the templates.
* **node repurposing** — per kept node, the Pearson correlation over every position up to the
  scored one of its activation inside the circuit with the same node in the full model on the same
  inputs. A kept node whose inputs were ablated away may carry something else than it does in the
  model; nodes below ``repurposed_below`` are listed and their share reported.
* **attention faithfulness** — per kept head (any of its q, k or v channels kept), the
  Jensen–Shannon divergence (bits, in [0, 1]) between its attention pattern at the scored
  position inside the circuit and in the full model, mean over sequences (the sink's mass is one
  more slot); heads above ``attention_diverges_above`` are listed.
* **seed variance** — the whole pruning repeated with other seeds (other training pairs, search
  draws and initial τ): the spread of the circuit's size and the node Jaccard between seeds.
* the inverse ablation, random same-size circuits and the shuffled-label control are the checks of
  :mod:`sparsejax.circuits.checks`; :func:`table_rows` puts them next to these.

Everything is computed in chunks of ``CHUNK_PAIRS`` pairs by jitted functions of the frozen model
(one compile per sequence-length bucket), so memory does not grow with the number of test pairs.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.circuits import calibration
from sparsejax.circuits import search
from sparsejax.circuits.evaluate import CircuitModel, TaskData
from sparsejax.circuits.graph import geometric_mean
from sparsejax.circuits.masks import NodeLayout
from sparsejax.model.gpt import merge
from sparsejax.tasks import generators as tasks_lib
from sparsejax.tasks.batch import encode_pairs
from sparsejax.utils.errors import UserError

CHUNK_PAIRS = 16  # pairs per probe call
NORM_SHRINK_BELOW = 0.5  # a normaliser ratio below this flags the circuit ``shrinks_stream``
FLAGS_OUT_OF_HEADLINE = ("trivially_solvable",)


# ------------------------------------------------------------------ the jitted probes
def _flat(data: TaskData, start: int, stop: int, rows: int):
  """Pairs start..stop as (rows, T) sequences, padded with copies of the first; weights 1 / 0."""
  b = data.batch
  n = (stop - start) * 2
  idx = np.concatenate([np.arange(n), np.zeros(rows - n, np.int64)])
  take = lambda a: np.asarray(a[start:stop]).reshape((n,) + a.shape[2:])[idx]
  weight = (np.arange(rows) < n).astype(np.float32)
  return take(b.tokens), take(b.last), take(b.correct), take(b.alt), weight


def _chunks(data: TaskData, chunk: int = CHUNK_PAIRS):
  data = data.trim(data.needed_length())
  for start in range(0, data.n_pairs, chunk):
    yield _flat(data, start, min(start + chunk, data.n_pairs), 2 * chunk)


def _norm_probe(graphdef, layout: NodeLayout, params, buffers, values, mask, tokens_BT, last_B,
                correct_B, alt_B):
  """Margins (B,) of the circuit with every norm frozen to the full model's normalisers, and per
  norm the log of circuit ÷ full normaliser at every position (B, T)."""
  model = merge(graphdef, params, buffers)
  iv = layout.interventions(mask, values)
  full = model.norm_scales(tokens_BT)
  circ = model.norm_scales(tokens_BT, interventions=iv)
  logits = model(tokens_BT, interventions=iv, positions_B=last_B, frozen_norms=full)
  pick = lambda tok: jnp.take_along_axis(logits, tok[:, None], axis=-1)[:, 0]
  log_ratio = {k: jnp.log(circ[k]) - jnp.log(full[k]) for k in full}
  return pick(correct_B) - pick(alt_B), log_ratio


def _js_bits(p, q):
  """Jensen–Shannon divergence in bits over the last axis."""
  m = 0.5 * (p + q)
  kl = lambda a: jnp.sum(jnp.where(a > 0, a * (jnp.log2(jnp.maximum(a, 1e-30))
                                               - jnp.log2(jnp.maximum(m, 1e-30))), 0.0), -1)
  return 0.5 * kl(p) + 0.5 * kl(q)


def _pattern(model, layer: int, q_BTA, k_BTA, last_B):
  """Attention probabilities (B, H, T [+ 1 sink]) of ``layer``'s heads at the scored positions,
  from the recorded (post-intervention) queries and keys: the model's own formula."""
  attn = model.blocks[layer].attn
  H, K = attn.n_head, attn.d_head
  B, T, _ = k_BTA.shape
  q = jnp.take_along_axis(q_BTA, last_B[:, None, None], axis=1)[:, 0].reshape(B, H, K)
  k = k_BTA.reshape(B, T, H, K)
  s = jnp.einsum("bhk,bthk->bht", q.astype(jnp.float32), k.astype(jnp.float32)) / math.sqrt(K)
  s = jnp.where((jnp.arange(T)[None, :] <= last_B[:, None])[:, None, :], s, -jnp.inf)
  if attn.sink_logit is not None:
    sink = jnp.broadcast_to(attn.sink_logit[...][None, :, None].astype(jnp.float32), (B, H, 1))
    s = jnp.concatenate([s, sink], axis=-1)
  return jax.nn.softmax(s, axis=-1)


def _activation_probe(graphdef, layout: NodeLayout, params, buffers, values, mask, tokens_BT,
                      last_B, weight_B):
  """Per node, the centred statistics (n, mean x, mean y, Σ(x−x̄)², Σ(y−ȳ)², Σ(x−x̄)(y−ȳ)) of its
  activation in the circuit (x) and in the full model (y) over positions ≤ the scored one; per
  layer and head, the summed JS divergence of the attention patterns at the scored position."""
  model = merge(graphdef, params, buffers)
  sites = layout.sites
  _, full = model.run_with_cache(tokens_BT, sites)
  _, circ = model.run_with_cache(tokens_BT, sites, interventions=layout.interventions(mask, values))
  T = tokens_BT.shape[1]
  w_BT1 = ((jnp.arange(T)[None, :] <= last_B[:, None]) * weight_B[:, None])[..., None]
  n = jnp.sum(w_BT1)
  stats = []
  for s in sites:
    x, y = circ[s].astype(jnp.float32), full[s].astype(jnp.float32)
    mx, my = jnp.sum(x * w_BT1, (0, 1)) / n, jnp.sum(y * w_BT1, (0, 1)) / n
    dx, dy = (x - mx[None, None]) * w_BT1, (y - my[None, None]) * w_BT1
    stats.append(jnp.stack([jnp.broadcast_to(n, mx.shape), mx, my, jnp.sum(dx * dx, (0, 1)),
                            jnp.sum(dy * dy, (0, 1)), jnp.sum(dx * dy, (0, 1))]))
  js = []
  n_layer = len(model.blocks)
  for layer in range(n_layer):
    p = _pattern(model, layer, circ[f"{layer}.attn.q"], circ[f"{layer}.attn.k"], last_B)
    f = _pattern(model, layer, full[f"{layer}.attn.q"], full[f"{layer}.attn.k"], last_B)
    js.append(jnp.sum(_js_bits(p, f) * weight_B[:, None], 0))
  return jnp.concatenate(stats, axis=1), jnp.stack(js)


def _merge_stats(a, b):
  """Chan et al.'s pairwise update of (n, x̄, ȳ, M2x, M2y, Cxy) (float64, (6, N) each)."""
  if a is None:
    return b
  n = a[0] + b[0]
  dx, dy = b[1] - a[1], b[2] - a[2]
  f = a[0] * b[0] / np.maximum(n, 1e-30)
  return np.stack([n, a[1] + dx * b[0] / n, a[2] + dy * b[0] / n, a[3] + b[3] + dx * dx * f,
                   a[4] + b[4] + dy * dy * f, a[5] + b[5] + dx * dy * f])


class Probes:
  """The suite's jitted functions on one :class:`CircuitModel` (compiled once per shape)."""

  def __init__(self, model: CircuitModel):
    self.model = model
    self._norm = jax.jit(functools.partial(_norm_probe, model.graphdef, model.layout))
    self._act = jax.jit(functools.partial(_activation_probe, model.graphdef, model.layout))

  def frozen_norms(self, data: TaskData, mask) -> dict:
    """``loss_frozen_norms`` and ``norm_ratio`` {norm: geometric-mean ratio} on ``data``."""
    m = self.model
    margins, sums, count = [], {}, 0.0
    for tokens, last, correct, alt, weight in _chunks(data):
      z, log_ratio = self._norm(m.params, m.buffers, m.values, jnp.asarray(mask),
                                jnp.asarray(tokens), jnp.asarray(last), jnp.asarray(correct),
                                jnp.asarray(alt))
      keep = weight > 0
      margins.append(np.asarray(z)[keep])
      pos = (np.arange(tokens.shape[1])[None, :] <= last[:, None]) & keep[:, None]
      for k, v in log_ratio.items():
        sums[k] = sums.get(k, 0.0) + float(np.asarray(v, np.float64)[pos].sum())
      count += float(pos.sum())
    z = np.concatenate(margins).reshape(-1, 2)
    ratio = {k: float(np.exp(v / count)) for k, v in sums.items()}
    return {"loss_frozen_norms": calibration.numpy_loss(z), "norm_ratio": ratio}

  def activations(self, data: TaskData, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(correlation (n_nodes,), NaN where either activation is constant; JS divergence
    (n_layer, n_head) mean over sequences; sequences)."""
    m = self.model
    stats, js, seqs = None, 0.0, 0.0
    for tokens, last, _, _, weight in _chunks(data):
      s, d = self._act(m.params, m.buffers, m.values, jnp.asarray(mask), jnp.asarray(tokens),
                       jnp.asarray(last), jnp.asarray(weight))
      stats = _merge_stats(stats, np.asarray(s, np.float64))
      js = js + np.asarray(d, np.float64)
      seqs += float(weight.sum())
    _, _, _, m2x, m2y, cxy = stats
    with np.errstate(invalid="ignore", divide="ignore"):
      corr = np.where((m2x > 1e-12 * stats[0]) & (m2y > 1e-12 * stats[0]),
                      cxy / np.sqrt(m2x * m2y), np.nan)
    return corr, js / max(seqs, 1.0), np.asarray(seqs)


# ------------------------------------------------------------------ per circuit
def kept_heads(layout: NodeLayout, mask, n_head: int) -> list[tuple[int, int]]:
  """(layer, head) of every head with any q, k or v channel in the circuit."""
  nodes = layout.nodes_of(mask)
  out = set()
  for site, ids in nodes.items():
    layer, _, part = site.partition(".")
    if part in ("attn.q", "attn.k", "attn.v") and ids:
      width = layout.widths[layout.sites.index(site)] // n_head
      out |= {(int(layer), i // width) for i in ids}
  return sorted(out)


def repurposing(layout: NodeLayout, mask, corr: np.ndarray, below: float) -> dict:
  """Correlations of the kept nodes; those below ``below`` (or constant in one model) listed."""
  kept = np.nonzero(np.asarray(mask) > 0)[0]
  c = corr[kept]
  flagged = [(layout.site_of(int(i)), None if np.isnan(v) else float(v))
             for i, v in zip(kept, c) if not v >= below]
  finite = c[np.isfinite(c)]
  return {"threshold": below, "kept": int(len(kept)),
          "median_correlation": float(np.median(finite)) if len(finite) else None,
          "min_correlation": float(finite.min()) if len(finite) else None,
          "repurposed": len(flagged), "share_repurposed": len(flagged) / max(len(kept), 1),
          "constant": int(np.sum(~np.isfinite(c))),
          "nodes": [{"site": s, "index": i, "correlation": v} for (s, i), v in flagged]}


def attention(layout: NodeLayout, mask, js: np.ndarray, n_head: int, above: float) -> dict:
  heads = kept_heads(layout, mask, n_head)
  per = [{"layer": l, "head": h, "js_bits": float(js[l, h])} for l, h in heads]
  vals = [p["js_bits"] for p in per]
  return {"threshold": above, "kept_heads": len(per),
          "mean_js_bits": float(np.mean(vals)) if vals else None,
          "max_js_bits": float(np.max(vals)) if vals else None,
          "diverging": [p for p in per if p["js_bits"] > above], "heads": per}


@dataclasses.dataclass(frozen=True)
class Settings:
  target_loss: float
  repurposed_below: float
  attention_diverges_above: float


def evaluate_circuits(model: CircuitModel, masks: dict[str, np.ndarray],
                      tests: dict[str, TaskData], oods: dict[str, TaskData | str],
                      settings: Settings, losses: dict[str, float],
                      progress: Callable[[str], None] = lambda _: None) -> dict[str, dict]:
  """The suite for every circuit ``masks[task]``; ``losses[task]`` is its test loss as searched
  (the checks' ``loss``). ``oods[task]`` is the ood TaskData, or why there is none."""
  probes = Probes(model)
  layout, n_head = model.layout, model.cfg.n_head
  q = model.margins_queue()
  zeros = np.zeros(layout.n_nodes, np.float32)
  ones = np.ones(layout.n_nodes, np.float32)
  tickets = {name: q.add(tests[name], zeros, None) for name in masks}
  zero = {name: calibration.numpy_loss(z) for name, z in zip(tickets, q.run())}
  ood_loss = {}
  ood_data = {n: d for n, d in oods.items() if isinstance(d, TaskData) and n in masks}
  if ood_data:
    q = model.margins_queue()
    t = {n: (q.add(d, masks[n], None), q.add(d, ones, None)) for n, d in ood_data.items()}
    res = q.run()
    ood_loss = {n: (calibration.numpy_loss(res[a]), calibration.numpy_loss(res[b]))
                for n, (a, b) in t.items()}
  out = {}
  for name, mask in masks.items():
    frozen = probes.frozen_norms(tests[name], mask)
    corr, js, _ = probes.activations(tests[name], mask)
    r = {"zero_nodes_loss": zero[name],
         "trivially_solvable": bool(zero[name] <= settings.target_loss), **frozen,
         "repurposing": repurposing(layout, mask, corr, settings.repurposed_below),
         "attention": attention(layout, mask, js, n_head, settings.attention_diverges_above)}
    if name in ood_loss:
      r["ood"] = {"loss": ood_loss[name][0], "full_model_loss": ood_loss[name][1],
                  "pairs": ood_data[name].n_pairs}
    elif name in oods:
      r["ood"] = {"error": str(oods[name])}
    r["flags"] = flags(r, losses.get(name), settings.target_loss)
    out[name] = r
    progress(f"faithfulness: {name}: zero nodes {r['zero_nodes_loss']:.3f}, frozen norms "
             f"{r['loss_frozen_norms']:.3f}, repurposed {r['repurposing']['repurposed']}/"
             f"{r['repurposing']['kept']}" + (f", flags: {', '.join(r['flags'])}"
                                               if r["flags"] else ""))
  return out


def flags(r: dict, loss: float | None, target: float) -> list[str]:
  """What a reader should distrust about a circuit, from its suite results."""
  out = []
  if r["trivially_solvable"]:
    out.append("trivially_solvable")
  if loss is not None and loss <= target < r["loss_frozen_norms"]:
    out.append("fails_frozen_norms")
  if r["norm_ratio"] and min(r["norm_ratio"].values()) < NORM_SHRINK_BELOW:
    out.append("shrinks_stream")
  ood = r.get("ood") or {}
  if "loss" in ood and ood["full_model_loss"] <= target < ood["loss"]:
    out.append("fails_ood")
  if r["repurposing"]["repurposed"]:
    out.append("repurposed_nodes")
  if r["attention"]["diverging"]:
    out.append("attention_diverges")
  return out


# ------------------------------------------------------------------ task data for the suite
def ood_splits(names, tokenizer, n_pairs: int, seed: int, max_len: int,
               with_rms: Callable[[TaskData], TaskData]) -> dict[str, TaskData | str]:
  """Each task's ``ood`` pairs as TaskData, all padded to one length (one queue); a task whose
  ood pairs cannot be encoded for this model maps to the reason."""
  raw: dict[str, Any] = {}
  for name in names:
    task = tasks_lib.get_task(name)
    try:
      raw[name] = encode_pairs(task, task.pairs(n_pairs, split="ood", seed=seed), tokenizer,
                               max_len)
    except (UserError, ValueError) as e:
      raw[name] = f"{type(e).__name__}: {e}"
  lengths = [b.seq_len for b in raw.values() if not isinstance(b, str)]
  T = max(lengths, default=0)
  return {n: b if isinstance(b, str) else with_rms(TaskData(b.pad_to(T))) for n, b in raw.items()}


# ------------------------------------------------------------------ seeds
def jaccard(a: set, b: set) -> float:
  return len(a & b) / len(a | b) if a | b else 1.0


def node_set(nodes: dict[str, list[int]]) -> set:
  return {(s, int(i)) for s, ids in nodes.items() for i in ids}


def seed_variance(node_sets: dict[int, dict[str, set]]) -> dict[str, dict]:
  """Per task: sizes by seed, their spread, and the Jaccard of the node sets over seed pairs
  (tasks pruned under fewer than two seeds are left out)."""
  tasks = sorted({t for by_task in node_sets.values() for t in by_task})
  out = {}
  for t in tasks:
    have = {s: by_task[t] for s, by_task in node_sets.items() if t in by_task}
    if len(have) < 2:
      continue
    sizes = [len(v) for v in have.values()]
    pairs = [jaccard(have[a], have[b]) for a, b in itertools.combinations(sorted(have), 2)]
    out[t] = {"seeds": sorted(have), "sizes": sizes, "size_mean": float(np.mean(sizes)),
              "size_std": float(np.std(sizes)),
              "size_spread": float((max(sizes) - min(sizes)) / max(np.mean(sizes), 1.0)),
              "jaccard_mean": float(np.mean(pairs)), "jaccard_min": float(np.min(pairs))}
  return out


def rerun_seeds(pruner, names: list[str], seeds: int) -> dict[int, dict[str, set]]:
  """Node sets of the same pruning (configuration unchanged but the seed; no controls, no suite)
  under seeds ``cfg.seed + 1 .. cfg.seed + seeds - 1``; the pruner's model and compiled functions
  are shared."""
  out = {}
  for k in range(1, seeds):
    sub = copy.copy(pruner)
    sub.cfg = dataclasses.replace(pruner.cfg, seed=pruner.cfg.seed + k, seeds=1,
                                  faithfulness=False, control=False)
    base = pruner.progress
    sub.progress = lambda msg, k=k: base(f"[seed +{k}] {msg}")
    sub.searcher = search.Searcher(pruner.model, sub.cfg, sub.progress)
    result = sub.prune_tasks(list(names))
    out[sub.cfg.seed] = {n: node_set(c.nodes) for n, c in result.circuits.items()}
  return out


# ------------------------------------------------------------------ the pipeline's hook
def run(pruner, circuits: dict, splits: dict[str, dict[str, TaskData]]) -> dict:
  """The suite for every circuit of ``pruner.prune_tasks`` (results go into each circuit's
  ``metrics["faithfulness"]``); returns the summary part (seed variance, headline)."""
  cfg = pruner.cfg
  if not cfg.faithfulness or not circuits:
    return {}
  layout = pruner.layout
  masks = {n: layout.mask_of(c.nodes) for n, c in circuits.items()}
  oods = {}
  if cfg.ood_pairs:
    oods = ood_splits(list(circuits), pruner.run.tokenizer, cfg.ood_pairs, cfg.seed,
                      pruner.model_cfg.block_size, pruner._with_rms)
  settings = Settings(cfg.target_loss, cfg.repurposed_below, cfg.attention_diverges_above)
  results = evaluate_circuits(pruner.model, masks, {n: splits[n]["test"] for n in circuits}, oods,
                              settings, {n: c.metrics.get("loss") for n, c in circuits.items()},
                              pruner.progress)
  variance = {}
  if cfg.seeds > 1:
    sets = {cfg.seed: {n: node_set(c.nodes) for n, c in circuits.items()}}
    sets.update(rerun_seeds(pruner, list(circuits), cfg.seeds))
    variance = seed_variance(sets)
  for name, c in circuits.items():
    if name in variance:
      results[name]["seed_variance"] = variance[name]
    c.metrics["faithfulness"] = results[name]
  return {"seeds": cfg.seeds, "settings": dataclasses.asdict(settings)}


def headline(summary: dict, circuits: dict) -> None:
  """The summary's headline geometric means over the circuits no flag in
  :data:`FLAGS_OUT_OF_HEADLINE` marks (the all-circuit values kept as ``*_all_circuits``), and a
  faithfulness row per task."""
  flagged = lambda c: set(c.metrics.get("faithfulness", {}).get("flags", ()))
  out = {n: c for n, c in circuits.items() if not flagged(c) & set(FLAGS_OUT_OF_HEADLINE)}
  if len(out) == len(circuits):
    return
  for key, count in (("geometric_mean_edges", lambda c: c.n_edges),
                     ("geometric_mean_essential_edges", lambda c: c.n_essential_edges),
                     ("geometric_mean_nodes", lambda c: c.n_nodes)):
    if key in summary:
      summary[f"{key}_all_circuits"] = summary[key]
      summary[key] = geometric_mean(count(c) for c in out.values())
  summary["headline_excludes"] = sorted(set(circuits) - set(out))


def summary_rows(summary: dict, circuits: dict) -> None:
  """Each summary row gets the suite's figures (``faithfulness``), and the headline is
  recomputed without trivially solvable tasks."""
  for name, c in circuits.items():
    f = c.metrics.get("faithfulness")
    if f is None or name not in summary.get("tasks", {}):
      continue
    row = {"zero_nodes_loss": f["zero_nodes_loss"], "loss_frozen_norms": f["loss_frozen_norms"],
           "norm_ratio_min": min(f["norm_ratio"].values()) if f["norm_ratio"] else None,
           "ood_loss": (f.get("ood") or {}).get("loss"),
           "ood_full_model_loss": (f.get("ood") or {}).get("full_model_loss"),
           "share_repurposed": f["repurposing"]["share_repurposed"],
           "median_correlation": f["repurposing"]["median_correlation"],
           "attention_mean_js_bits": f["attention"]["mean_js_bits"],
           "attention_max_js_bits": f["attention"]["max_js_bits"], "flags": f["flags"]}
    if "seed_variance" in f:
      sv = f["seed_variance"]
      row |= {"seed_sizes": sv["sizes"], "seed_jaccard_mean": sv["jaccard_mean"]}
    summary["tasks"][name]["faithfulness"] = row
  headline(summary, circuits)


def _fmt(x, digits: int = 3) -> str:
  return f"{x:.{digits}f}" if isinstance(x, (int, float)) else "-"


def format_table(summary: dict) -> str:
  """The suite's table (what the binaries print after the circuit table); '' without it."""
  rows = {n: r["faithfulness"] for n, r in summary.get("tasks", {}).items()
          if "faithfulness" in r}
  if not rows:
    return ""
  lines = [f"{'faithfulness':<28} {'loss':>6} {'0-node':>6} {'frozen':>6} {'norm÷':>6} "
           f"{'ood':>6} {'ood.fm':>6} {'repurp':>6} {'corr':>6} {'attnJS':>6} {'seedJ':>6}  flags"]
  for name, f in rows.items():
    loss = summary["tasks"][name].get("loss")
    lines.append(f"{name:<28} {_fmt(loss):>6} {_fmt(f['zero_nodes_loss']):>6} "
                 f"{_fmt(f['loss_frozen_norms']):>6} {_fmt(f['norm_ratio_min'], 2):>6} "
                 f"{_fmt(f['ood_loss']):>6} {_fmt(f['ood_full_model_loss']):>6} "
                 f"{_fmt(f['share_repurposed'], 2):>6} {_fmt(f['median_correlation'], 2):>6} "
                 f"{_fmt(f['attention_mean_js_bits'], 3):>6} "
                 f"{_fmt(f.get('seed_jaccard_mean'), 2):>6}  {', '.join(f['flags']) or '-'}")
  if summary.get("headline_excludes"):
    lines.append(f"headline means leave out (trivially solvable): "
                 f"{', '.join(summary['headline_excludes'])}")
  return "\n".join(lines)


# ------------------------------------------------------------------ the viewer's panel
def panel_html(f: dict | None, escape: Callable[[str], str]) -> str:
  """The task page's "Faithfulness" section (empty without the suite)."""
  if not f:
    return ""
  rep, att, ood = f["repurposing"], f["attention"], f.get("ood") or {}
  ratio = f["norm_ratio"]
  worst = min(ratio, key=ratio.get) if ratio else None
  rows = [("loss with zero nodes (bigram table and direct path only)",
           _fmt(f["zero_nodes_loss"]) + (" — TRIVIALLY SOLVABLE: left out of the headline"
                                         if f["trivially_solvable"] else "")),
          ("loss with every norm frozen to the full model's", _fmt(f["loss_frozen_norms"])),
          ("smallest normaliser ratio circuit ÷ full model",
           f"{_fmt(ratio.get(worst), 2)} ({worst})" if worst else "-"),
          ("held-out templates (ood): circuit / full model",
           f"{_fmt(ood.get('loss'))} / {_fmt(ood.get('full_model_loss'))}" if "loss" in ood
           else ood.get("error", "-")),
          (f"kept nodes correlating < {rep['threshold']:g} with the full model",
           f"{rep['repurposed']} of {rep['kept']} ({100 * rep['share_repurposed']:.0f} %), "
           f"median correlation {_fmt(rep['median_correlation'], 2)}"),
          ("attention pattern divergence at the scored position (JS bits, kept heads)",
           f"mean {_fmt(att['mean_js_bits'])}, max {_fmt(att['max_js_bits'])} over "
           f"{att['kept_heads']} heads; {len(att['diverging'])} above {att['threshold']:g}")]
  sv = f.get("seed_variance")
  if sv:
    rows.append(("other seeds: sizes / node Jaccard (mean, min)",
                 f"{', '.join(map(str, sv['sizes']))} / {_fmt(sv['jaccard_mean'], 2)}, "
                 f"{_fmt(sv['jaccard_min'], 2)}"))
  rows.append(("flags", ", ".join(f["flags"]) or "none"))
  table = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
  listed = "".join(f"<li>{escape(n['site'])}[{n['index']}]: "
                   f"{_fmt(n['correlation'], 2) if n['correlation'] is not None else 'constant'}"
                   f"</li>" for n in rep["nodes"][:50])
  more = f"<li>… {len(rep['nodes']) - 50} more</li>" if len(rep["nodes"]) > 50 else ""
  details = (f"<details><summary>repurposed nodes ({rep['repurposed']})</summary><ul>{listed}"
             f"{more}</ul></details>" if rep["nodes"] else "")
  return (f"<h2>Faithfulness</h2><table class=\"metrics\" id=\"faithfulness\">{table}</table>"
          f"{details}")


def index_html(summary: dict, escape: Callable[[str], str], link: Callable[[str], str]) -> str:
  """The index page's faithfulness lines: what the headline leaves out, each task's flags
  (``link``: a task's page)."""
  rows = {n: r["faithfulness"] for n, r in summary.get("tasks", {}).items()
          if "faithfulness" in r}
  if not rows:
    return ""
  out = ""
  if summary.get("headline_excludes"):
    out += (f"<p>These means leave out the trivially solvable tasks (at the target with zero "
            f"nodes): <b>{escape(', '.join(summary['headline_excludes']))}</b>.</p>")
  flagged = [f"<li><a href=\"{escape(link(n))}\">{escape(n)}</a>: "
             f"{escape(', '.join(f['flags']))}</li>" for n, f in rows.items() if f["flags"]]
  out += (f"<details id=\"faithfulness-flags\"><summary>Faithfulness flags: {len(flagged)} of "
          f"{len(rows)} circuits (see each task page)</summary><ul>{''.join(flagged)}</ul>"
          f"</details>")
  return out
