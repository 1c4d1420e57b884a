"""The experiment config files parse into valid RunConfigs with the paper's shapes."""

import importlib.util
from pathlib import Path

import pytest

from sparsejax.train.run_config import RunConfig

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"


def load(name: str, arg: str | None = None) -> RunConfig:
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cd = mod.get_config(arg) if arg is not None else mod.get_config()
  return RunConfig.from_dict(cd.to_dict())


def test_tiny():
  cfg = load("tiny")
  assert cfg.model.vocab_size == cfg.data.bpe_vocab_size == 2048
  assert cfg.sparsity.enabled


@pytest.mark.parametrize("e", [1, 2, 4, 8, 16])
def test_csp_family_shapes(e):
  cfg = load("csp", f"{e}x")
  m = cfg.model
  assert (m.n_layer, m.d_head, m.d_model, m.n_head, m.mlp_dim) == (8, 16, 256 * e, 16 * e,
                                                                    1024 * e)
  assert cfg.sparsity.target_density == pytest.approx(min(1.0, 0.25 / e**2))
  assert cfg.sparsity.embed_density_factor == e
  assert (cfg.train.batch_size, cfg.train.seq_len) == (512, 256)
  assert cfg.train.steps == int(32e9 // (512 * 256))
  assert m.afrac == 0.25 and len(m.loctypes) == 8


def test_csp_knobs_and_dense_baseline():
  cfg = load("csp", "2x,pfrac=0.5,afrac=0.125,anneal_end=0.8")
  assert cfg.sparsity.target_density == pytest.approx(0.5 / 4)
  assert cfg.model.afrac == 0.125 and cfg.sparsity.anneal_end == 0.8
  dense = load("csp", "4x,dense")
  assert not dense.sparsity.enabled and dense.model.afrac is None
  with pytest.raises(ValueError, match="unknown variant key"):
    load("csp", "4x,pfarc=1")
