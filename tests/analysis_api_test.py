"""The analysis API from the top-level package: load_run, the task registry, task_loss, and the
README's "Analyse a trained run" example."""

import logging
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsejax as sj
from conftest import train_tiny_bpe_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("analysis") / "run"
  train_tiny_bpe_run(path)
  return str(path)


@pytest.fixture(scope="module")
def run(run_dir):
  return sj.load_run(run_dir, progress=None)


def test_load_run_keeps_orbax_logs_out_and_restores_the_logger(run_dir, caplog):
  from absl import logging as absl_logging
  logger = absl_logging.get_absl_logger()
  filters = list(logger.filters)
  caplog.set_level(logging.DEBUG)
  run = sj.load_run(run_dir, progress=None)
  assert run.step == 4
  orbax = [r for r in caplog.records if "orbax" in (r.pathname or "")]
  assert orbax == []
  assert logger.filters == filters  # quiet only around the load, not for the session
  # An orbax record logged after the load reaches the handlers (nothing is silenced globally).
  from sparsejax.train import checkpoint
  ckpt = checkpoint.Checkpointer(str(Path(run_dir) / "checkpoints"), read_only=True)
  ckpt.close(quiet=True)
  assert any("orbax" in (r.pathname or "") for r in caplog.records)


def test_load_run_shows_orbax_logs_when_verbosity_asks_for_them(run_dir, caplog):
  from absl import logging as absl_logging
  before = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.INFO)
  try:
    caplog.set_level(logging.DEBUG)
    sj.load_run(run_dir, progress=None)
  finally:
    absl_logging.set_verbosity(before)
  assert any("orbax" in (r.pathname or "") for r in caplog.records)


def test_task_registry_is_reachable_from_the_package():
  assert len(sj.TASKS) == 20 and sj.get_task("bracket_counting") is sj.TASKS["bracket_counting"]
  assert isinstance(sj.TASKS["for_while"], sj.Task)
  pair = sj.get_task("for_while").pair(0, 0, split="test")
  assert isinstance(pair, sj.TaskPair)


def test_task_loss_matches_evaluate_and_reacts_to_interventions(run):
  model = run.model()
  batch = sj.task_batch("for_while", run.tokenizer, n_pairs=8, split="test")
  loss = float(sj.task_loss(model, batch))
  scored = sj.evaluate_run(run, ["for_while"], pairs=8, splits=("test",))["for_while"]["loss"]
  np.testing.assert_allclose(loss, scored, rtol=1e-5)

  site = "0.mlp.post_act"
  width = run.config.model.mlp_dim
  keep = sj.Intervention(jnp.ones(width), jnp.zeros(width))
  np.testing.assert_allclose(float(sj.task_loss(model, batch, interventions={site: keep})), loss,
                             rtol=1e-6)
  # Zero-ablating every neuron is the same as removing the MLP's output weights by hand.
  ablated = float(sj.task_loss(model, batch, interventions={site: keep._replace(
      mask=jnp.zeros(width))}))
  no_mlp = run.model()
  kernel = no_mlp.blocks[0].mlp.c_proj.kernel
  kernel.set_value(jnp.zeros_like(kernel[...]))  # params are host (read-only) arrays
  np.testing.assert_allclose(ablated, float(sj.task_loss(no_mlp, batch)), rtol=1e-6)
  assert abs(ablated - loss) > 1e-6  # (a model trained 4 steps: small, but well above rounding)
  # TransformerLens aliases name the same site.
  alias = float(sj.task_loss(model, batch, interventions={"blocks.0.mlp.hook_post": keep._replace(
      mask=jnp.zeros(width))}))
  np.testing.assert_allclose(alias, ablated, rtol=1e-6)

  # Patching with a value per sequence and position (batch axis laid out pair-major).
  flat = batch.tokens.reshape(-1, batch.seq_len)
  _, cache = model.run_with_cache(flat, ["0.attn.resid_delta"])
  own = cache["0.attn.resid_delta"]
  same = sj.Intervention(jnp.zeros(own.shape[-1]), own)
  np.testing.assert_allclose(
      float(sj.task_loss(model, batch, interventions={"0.attn.resid_delta": same})), loss,
      rtol=1e-5)


def test_task_loss_vmaps_and_differentiates_over_masks(run):
  model = run.model()
  batch = sj.task_batch("for_while", run.tokenizer, n_pairs=4, split="test")
  width = run.config.model.mlp_dim
  mean = jnp.zeros(width)
  f = lambda m: sj.task_loss(model, batch, interventions={"0.mlp.post_act": sj.Intervention(m,
                                                                                           mean)})
  masks = 1.0 - jnp.eye(width)[:3]
  vmapped = jax.jit(jax.vmap(f))(masks)
  one_by_one = [float(f(m)) for m in masks]
  np.testing.assert_allclose(np.asarray(vmapped), one_by_one, rtol=1e-5)
  grad = jax.grad(f)(jnp.ones(width))
  assert grad.shape == (width,) and np.isfinite(np.asarray(grad)).all()


def test_readme_analysis_example_runs(run_dir, capsys):
  text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
  section = text.split("## Analyse a trained run", 1)[1]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  assert 'sj.load_run("runs/tiny")' in code
  code = code.replace('"runs/tiny"', repr(run_dir))
  env: dict = {}
  exec(compile(code, "README.md", "exec"), env)
  assert env["per_neuron"].shape == (8,)
  assert np.isfinite(float(env["loss"])) and np.isfinite(float(env["patched"]))
  assert float(env["ablated"]) != float(env["loss"])
  out = capsys.readouterr()
  assert "task loss" in out.out and "WARNING" not in out.err


def test_load_run_opens_a_run_whose_optimizer_state_has_another_layout(run_dir, run, tmp_path):
  """A run saved by a version with another optax chain layout (e.g. before the projection kept
  its thresholds in the state) still opens for analysis; resuming it is still refused."""
  import shutil

  from sparsejax.sparse import optim
  from sparsejax.train import checkpoint, step as train_step

  work = tmp_path / "old"
  shutil.copytree(run_dir, work)
  cfg = run.config
  tx = optim.sparse_adam(cfg.optim, cfg.sparsity, cfg.train.steps)
  _, abstract = train_step.abstract_train_state(cfg.model, tx, seed=cfg.train.seed)
  ckpt = checkpoint.Checkpointer(str(work / "checkpoints"))
  state, meta = ckpt.restore(abstract)
  old = train_step.TrainState(step=state.step, params=state.params, buffers=state.buffers,
                              opt_state={"legacy_count": jnp.zeros((), jnp.int32),
                                         "legacy_mu": jnp.ones((3, 2))})
  ckpt.save(run.step + 1, old, dict(meta, step=run.step + 1))
  ckpt.wait()
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="opt_state"):
    ckpt.restore(abstract)
  ckpt.close(quiet=True)
  loaded = sj.load_run(str(work), progress=None)
  assert loaded.step == run.step + 1
  jax.tree.map(np.testing.assert_array_equal, loaded.params, run.params)
  jax.tree.map(np.testing.assert_array_equal, loaded.buffers, run.buffers)
