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

from sparsejax.circuits.calibration import numpy_loss
from sparsejax.circuits.evaluate import TaskData
from sparsejax.circuits.graph import Circuit
from sparsejax.circuits.masks import NodeLayout
from sparsejax.model.gpt import merge

CONTEXT_TOKENS = 14  # tokens of context shown before the scored position


def circuit_mask(layout: NodeLayout, circuit: Circuit) -> np.ndarray:
  return layout.mask_of(circuit.nodes)


@functools.lru_cache(maxsize=8)
def _activations(graphdef, layout: NodeLayout):
  """Jitted activations of every node at the scored positions (one compile)."""

  @jax.jit
  def activations(params, buffers, values, mask, tokens, last):
    model = merge(graphdef, params, buffers)
    P, S, T = tokens.shape
    _, cache = model.run_with_cache(tokens.reshape(P * S, T), layout.sites,
                                    interventions=layout.interventions(mask, values))
    flat = jnp.concatenate([cache[s] for s in layout.sites], axis=-1).reshape(P, S, T, -1)
    return jnp.take_along_axis(flat, last[..., None, None], axis=2)[:, :, 0]

  return activations


def node_details(pruner, circuits: dict[str, Circuit], datas: dict[str, TaskData], tokenizer, *,
                 exact_top: int = 12, top_contexts: int = 5) -> dict[str, dict]:
  """{task: {"nodes": {"site[i]": {...}}, "contexts": [[A tokens, B tokens] per pair], ...}}.

  ``datas[task]`` are the task's pairs (all tasks padded to one length). The exact single-node
  ablations and the mask gradients of all tasks run through one queue each (a few compiled
  chunks for everything).
  """
  model = pruner.model
  layout = model.layout
  activations = _activations(model.graphdef, layout)
  queue, grads = model.margins_queue(), model.node_grad_queue()
  prepared = {}
  for name, circuit in circuits.items():
    d = datas[name]
    mask = circuit_mask(layout, circuit)
    acts = np.asarray(activations(model.params, model.buffers, model.values, jnp.asarray(mask),
                                  jnp.asarray(d.batch.tokens), jnp.asarray(d.batch.last)))
    prepared[name] = [acts, mask, grads.add(d, mask, None)]
  grad = grads.run()
  for name, circuit in circuits.items():
    acts, mask, g = prepared[name]
    kept = np.nonzero(mask)[0]
    estimate = -np.asarray(grad[g])  # loss(m - e_i) - loss(m) ≈ -∂L/∂m_i
    tickets = {"base": queue.add(datas[name], mask, None)}
    for i in kept[np.argsort(-np.abs(estimate[kept]), kind="stable")[:exact_top]]:
      m = mask.copy()
      m[i] = 0.0
      tickets[int(i)] = queue.add(datas[name], m, None)
    prepared[name] = (acts, kept, estimate, tickets)
  res = [numpy_loss(z) for z in queue.run()]
  return {name: _details(layout, datas[name], tokenizer, res, *prepared[name], top_contexts)
          for name in circuits}


def _details(layout, data: TaskData, tokenizer, res, acts, kept, estimate, tickets,
             top_contexts) -> dict:
  b = data.batch
  P, S, _ = b.tokens.shape
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
        "mean_abs": float(np.abs(a).mean()),
        "ablation_delta": (float(res[tickets[int(i)]]) - base_loss) if exact
                          else float(estimate[i]),
        "ablation_exact": exact,
        "top": [{"pair": int(t // S), "side": "AB"[t % S], "value": float(flat[t])} for t in top]}
  contexts = []
  for p in range(P):
    row = []
    for s in range(S):
      ids = b.tokens[p, s, : b.last[p, s] + 1][-CONTEXT_TOKENS:]
      row.append([tokenizer.decode([int(t)]) for t in ids])
    contexts.append(row)
  return {"nodes": nodes, "contexts": contexts, "base_loss": base_loss,
          "completions": [[tokenizer.decode([int(b.correct[p, 0])]),
                           tokenizer.decode([int(b.correct[p, 1])])] for p in range(P)]}
