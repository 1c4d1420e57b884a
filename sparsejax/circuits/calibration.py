"""Logit calibration of a circuit: a scale and shift fitted with 16 L-BFGS steps (paper §A.5).

A discretized circuit's logits are uncalibrated (often too flat). In the task's binary loss only
the margin z = l(correct) − l(alt) of each sequence matters, so the fit acts on it: a scale s (how
sharp) and a shift b towards the token that is right for context A,

  z' = s · z + b · (+1 for context A, −1 for context B),   loss = mean softplus(−z').

A small ridge penalty towards (1, 0) keeps the fit finite when the pairs are perfectly separated
(the unpenalised optimum is then an infinite scale). Everything is a pure function of the margins
(P, 2), so many circuits are fitted in one vmapped call (:func:`calibrated_losses`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

CALIBRATION_RIDGE = 1e-2
STEPS = 16
# NumPy, not jnp: a jnp array at import would start the XLA backend before a multi-process
# binary calls jax.distributed.initialize().
_SIDE = np.array([1.0, -1.0], np.float32)


def calibrated_loss(margins_P2, scale, shift):
  """Task loss with margins z → scale·z ± shift (+ for context A, − for B)."""
  z = scale * jnp.asarray(margins_P2) + shift * _SIDE[None, :]
  return jax.nn.softplus(-z).mean()


def raw_loss(margins_P2):
  return calibrated_loss(margins_P2, 1.0, 0.0)


def _fit(margins, steps):
  fn = lambda p: calibrated_loss(margins, p[0], p[1]) + CALIBRATION_RIDGE * (
      (p[0] - 1.0) ** 2 + p[1] ** 2)
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(fn)

  def step(_, carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fn)
    return optax.apply_updates(params, updates), state

  params = jnp.array([1.0, 0.0])
  params, _ = jax.lax.fori_loop(0, steps, step, (params, opt.init(params)))
  return params


@functools.partial(jax.jit, static_argnums=1)
def _fit_many(margins_RP2, steps):
  return jax.vmap(lambda m: _fit(m, steps))(margins_RP2)


def fit_logit_calibration(margins_P2, steps: int = STEPS) -> tuple[float, float]:
  """(scale, shift) fitted on one circuit's margins."""
  p = np.asarray(_fit_many(jnp.asarray(margins_P2, jnp.float32)[None], steps))[0]
  return float(p[0]), float(p[1])


def calibrated_losses(fit_on: list, judge_on: list | None = None,
                      steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
  """For many circuits at once: (scale, shift) fitted on the margins ``fit_on[i]`` (P, 2) and the
  calibrated loss on ``judge_on[i]`` (default: the same margins). Returns (losses (R,),
  params (R, 2)). Margins of different pair counts are fitted in separate calls."""
  judge_on = fit_on if judge_on is None else judge_on
  params = np.zeros((len(fit_on), 2), np.float32)
  by_len: dict[int, list[int]] = {}
  for i, m in enumerate(fit_on):
    by_len.setdefault(np.shape(m)[0], []).append(i)
  for ids in by_len.values():
    params[ids] = np.asarray(_fit_many(jnp.asarray(np.stack([fit_on[i] for i in ids]),
                                                   jnp.float32), steps))
  losses = np.asarray([numpy_loss(judge_on[i], params[i, 0], params[i, 1])
                       for i in range(len(fit_on))])
  return losses, params


def numpy_loss(margins_P2, scale: float = 1.0, shift: float = 0.0) -> float:
  """:func:`calibrated_loss` in NumPy (no dispatch: for many small host-side evaluations)."""
  z = scale * np.asarray(margins_P2, np.float64) + shift * np.array([1.0, -1.0])
  return float(np.logaddexp(0.0, -z).mean())
