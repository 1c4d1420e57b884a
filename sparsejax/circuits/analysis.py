"""What each node of a circuit does on its task, for the viewer.

For every kept node, on the task's test pairs with the circuit in place (everything else ablated):
its activation at the scored position on each side of the pairs (mean and spread), the contexts
where it is largest, and the task-loss change when it alone is removed from the circuit. That
change is measured exactly for the ``exact_top`` nodes with the largest first-order estimate
(gradient of the loss with respect to the node's mask); the others carry the estimate, marked so.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.circuits import prune
from sparsejax.model.gpt import merge
from sparsejax.circuits.graph import Circuit

CONTEXT_TOKENS = 14  # tokens of context shown before the scored position


def circuit_mask(layout: prune.NodeLayout, circuit: Circuit) -> np.ndarray:
  mask = np.zeros(layout.n_nodes, np.float32)
  for site, o in zip(layout.sites, layout.offsets):
    ids = circuit.nodes.get(site, [])
    if ids:
      mask[o + np.asarray(ids)] = 1.0
  return mask


@functools.lru_cache(maxsize=8)
def _functions(graphdef, layout: prune.NodeLayout):
  """Jitted activations-at-the-scored-position and mask-gradient functions (one compile each)."""

  @jax.jit
  def activations(params, buffers, values, mask, tokens, last):
    model = merge(graphdef, params, buffers)
    P, S, T = tokens.shape
    _, cache = model.run_with_cache(tokens.reshape(P * S, T), layout.sites,
                                    interventions=layout.interventions(mask, values))
    flat = jnp.concatenate([cache[s] for s in layout.sites], axis=-1).reshape(P, S, T, -1)
    return jnp.take_along_axis(flat, last[..., None, None], axis=2)[:, :, 0]

  @jax.jit
  def mask_grad(params, buffers, values, mask, arrays):
    return jax.grad(lambda m: prune.circuit_loss(graphdef, params, buffers, layout, m, values,
                                                 arrays))(mask)

  return activations, mask_grad


def node_details(pruner, circuits: dict[str, Circuit], arrays: dict[str, dict], tokenizer, *,
                 exact_top: int = 12, top_contexts: int = 5) -> dict[str, dict]:
  """{task: {"nodes": {"site[i]": {...}}, "contexts": [[A tokens, B tokens] per pair], ...}}.

  ``arrays[task]`` are the task's pairs (all tasks padded to one length). The exact single-node
  ablations of all tasks run through one queue (a few compiled chunks for everything).
  """
  layout = pruner.layout
  activations, mask_grad = _functions(pruner.run.graphdef, layout)
  queue = pruner.loss_queue()
  prepared = {}
  for name, circuit in circuits.items():
    a = arrays[name]
    mask = circuit_mask(layout, circuit)
    ja = {k: jnp.asarray(v) for k, v in a.items()}
    acts = np.asarray(activations(pruner.params, pruner.buffers, pruner.values,
                                  jnp.asarray(mask), ja["tokens"], ja["last"]))  # (P, S, n_nodes)
    grad = np.asarray(mask_grad(pruner.params, pruner.buffers, pruner.values, jnp.asarray(mask),
                                ja))
    kept = np.nonzero(mask)[0]
    estimate = -grad  # loss(m - e_i) - loss(m) ≈ -∂L/∂m_i
    tickets = {"base": queue.add(mask, a)}
    for i in kept[np.argsort(-np.abs(estimate[kept]), kind="stable")[:exact_top]]:
      m = mask.copy()
      m[i] = 0.0
      tickets[int(i)] = queue.add(m, a)
    prepared[name] = (acts, kept, estimate, tickets)
  res = queue.run()
  return {name: _details(layout, arrays[name], tokenizer, res, *prepared[name], top_contexts)
          for name in circuits}


def _details(layout, arrays, tokenizer, res, acts, kept, estimate, tickets, top_contexts) -> dict:
  P, S, _ = arrays["tokens"].shape
  base_loss = float(res[tickets["base"]])
  nodes = {}
  for i in kept:
    site, index = layout.site_of(int(i))
    a = acts[:, :, i]
    flat = a.reshape(-1)
    top = np.argsort(-flat, kind="stable")[:top_contexts]
    exact = int(i) in tickets
    nodes[f"{site}[{index}]"] = {
        "site": site, "index": index,
        "mean_a": float(a[:, 0].mean()), "std_a": float(a[:, 0].std()),
        "mean_b": float(a[:, 1].mean()), "std_b": float(a[:, 1].std()),
        "ablation_delta": (float(res[tickets[int(i)]]) - base_loss) if exact
                          else float(estimate[i]),
        "ablation_exact": exact,
        "top": [{"pair": int(t // S), "side": "AB"[t % S], "value": float(flat[t])} for t in top]}
  contexts = []
  for p in range(P):
    row = []
    for s in range(S):
      ids = arrays["tokens"][p, s, : arrays["last"][p, s] + 1][-CONTEXT_TOKENS:]
      row.append([tokenizer.decode([int(t)]) for t in ids])
    contexts.append(row)
  return {"nodes": nodes, "contexts": contexts, "base_loss": base_loss,
          "completions": [[tokenizer.decode([int(arrays["correct"][p, 0])]),
                           tokenizer.decode([int(arrays["correct"][p, 1])])] for p in range(P)]}
