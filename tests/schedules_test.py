import math

import numpy as np
import pytest

from sparsejax.sparse import schedules
from sparsejax.sparse.optim import OptimConfig, learning_rate_schedule
from sparsejax.sparse.sparsity import SparsityConfig

T = 1000


def test_hidden_density_linear_anneal():
  d = lambda s: float(schedules.hidden_density(s, total_steps=T, target=1 / 16))
  assert d(0) == 1.0 and d(10) == 1.0  # dense until 1 % of training
  assert d(500) == pytest.approx(1 / 16) and d(999) == pytest.approx(1 / 16)
  # Linear between 10 and 500: halfway → halfway between 1 and 1/16.
  assert d(255) == pytest.approx((1 + 1 / 16) / 2, rel=1e-6)
  values = [d(s) for s in range(0, T, 7)]
  assert all(a >= b for a, b in zip(values, values[1:]))


def test_hidden_density_power_law_anneal():
  d = lambda s: float(schedules.hidden_density(s, total_steps=T, target=1 / 64, mode="power_law"))
  assert d(10) == pytest.approx(1.0) and d(500) == pytest.approx(1 / 64, rel=1e-5)
  # log-log linear: at the geometric midpoint of [10, 500] the density is sqrt(1/64).
  assert d(math.sqrt(10 * 500)) == pytest.approx(1 / 8, rel=1e-4)


def test_embed_density_matches_official_adj_formula():
  """Official script: L0frac = adj(pfrac_t) / e, adj(x) = lerp(pfrac, e, (x-pfrac)/(e^2-pfrac))."""
  e, pfrac = 4.0, 0.25
  cfg = SparsityConfig.from_pfrac(pfrac, e)
  assert cfg.target_density == pfrac / e**2 and cfg.embed_density_factor == e
  for step in (0, 10, 100, 300, 499, 500, 900):
    d_t = float(cfg.hidden_density(step, T))
    pfrac_t = d_t * e**2  # the official anneal is linear in pfrac from e^2 to pfrac
    adj = pfrac + (e - pfrac) * (pfrac_t - pfrac) / (e * e - pfrac)
    want = min(adj / e, 1.0)
    assert float(cfg.group_density("embed", step, T)) == pytest.approx(want, rel=1e-5)
  assert float(cfg.group_density("embed", 900, T)) == pytest.approx(e * pfrac / e**2)


def test_abrupt_embed_schedule_stays_dense_until_late():
  cfg = SparsityConfig(target_density=1 / 64, embed_density_factor=4, embed_schedule="abrupt")
  dens = [float(cfg.group_density("embed", s, T)) for s in range(0, T, 5)]
  first_sparse = next(i * 5 for i, v in enumerate(dens) if v < 1.0)
  # min(1, 4 · d_t) < 1 only once d_t < 1/4: at 10 + 490 · (3/4) / (63/64) ≈ 383.
  assert 380 <= first_sparse <= 390
  assert dens[-1] == pytest.approx(4 / 64)


def test_sharkfin_learning_rate():
  opt = OptimConfig(lr=1e-2, warmup_frac=0.01)
  sp = SparsityConfig(target_density=1 / 16)
  lr = learning_rate_schedule(opt, sp, T)
  assert float(lr(0)) == 0.0
  # End of warmup: w = 1, still dense → lr · sqrt(1/16).
  assert float(lr(10)) == pytest.approx(1e-2 * 0.25, rel=1e-5)
  # End of anneal: factor 1, decay (1 - 490/990).
  assert float(lr(500)) == pytest.approx(1e-2 * (1 - 490 / 990), rel=1e-5)
  assert float(lr(T)) == pytest.approx(0.0, abs=1e-9)
  values = np.array([float(lr(s)) for s in range(0, T + 1)])
  assert values.argmax() == 500  # the fin peaks when annealing ends
  dense = learning_rate_schedule(opt, SparsityConfig(enabled=False), T)
  assert float(dense(10)) == pytest.approx(1e-2)


@pytest.mark.parametrize("kwargs", [
    dict(target_density=0.0), dict(target_density=1.5), dict(embed_density_factor=0.5),
    dict(anneal_start=0.6, anneal_end=0.5), dict(embed_schedule="weird"),
    dict(anneal_mode="cosine"), dict(min_alive=-1), dict(candidates_per_pass=0)])
def test_bad_sparsity_config_raises(kwargs):
  with pytest.raises(ValueError, match="SparsityConfig"):
    SparsityConfig(**kwargs)
