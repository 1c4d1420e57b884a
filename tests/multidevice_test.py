"""The sharded training step on 8 fake CPU devices (data 2 x fsdp 4) matches one device."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import json
    import jax, jax.numpy as jnp, numpy as np
    from sparsejax.train import distributed
    from sparsejax.sparse import optim
    from sparsejax.sparse import sparsity as sp
    from sparsejax.train import step as ts
    from sparsejax.model.config import GPTConfig
    from sparsejax.data.dataset import BatchSampler

    assert jax.device_count() == 8, jax.devices()
    cfg = GPTConfig(block_size=32, vocab_size=64, n_layer=2, n_head=4, d_head=8, d_model=32,
                    d_mlp=64, rms_norm=True, tied_unembed=False, enable_bigram_table=True,
                    learnable_bigram_table=True, grad_checkpointing=False, afrac=0.5,
                    afrac_loctypes="attn_in,mlp_neuron")
    s_cfg = sp.SparsityConfig(target_density=0.25, embed_density_factor=2, anneal_end=0.3)
    steps = 5
    tx = optim.sparse_adam(optim.OptimConfig(lr=0.01), s_cfg, steps)
    tokens = np.random.default_rng(0).integers(0, 64, 5000).astype(np.uint16)
    sampler = BatchSampler(tokens, batch_size=8, seq_len=16, seed=0)
    out = {}
    for name, mesh in [("one", distributed.make_mesh(1, jax.devices()[:1])),
                       ("eight", distributed.make_mesh(4))]:
      graphdef, state = ts.create_train_state(cfg, tx, seed=0, mesh=mesh)
      step = ts.make_train_step(graphdef, tx, sparsity=s_cfg, total_steps=steps, mesh=mesh,
                                state=state)
      losses, l0 = [], []
      for s in range(steps):
        state, m = step(state, distributed.global_batch(sampler.batch(s), mesh))
        losses.append(float(m["loss"]))
        l0.append(int(m["l0"]))
      kernel = state.params["blocks"][0]["mlp"]["c_fc"]["kernel"]
      nnz = sum(int(jnp.count_nonzero(w)) for w in jax.tree.leaves(state.params)
                if w.ndim == 2 and w.shape != (64, 64))
      out[name] = dict(losses=losses, l0=l0, nnz=nnz, spec=str(kernel.sharding.spec),
                       devices=len(kernel.sharding.device_set))
    print("RESULT " + json.dumps(out))
''')


def test_sharded_step_matches_single_device():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
  res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                       timeout=600, cwd=ROOT)
  assert res.returncode == 0, res.stderr[-3000:]
  out = json.loads(res.stdout.split("RESULT ")[1])
  one, eight = out["one"], out["eight"]
  assert eight["devices"] == 8 and "fsdp" in eight["spec"]
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5)
  assert eight["l0"] == one["l0"]
  # The projection on sharded matrices keeps exactly the scheduled number of entries.
  assert eight["nnz"] == one["nnz"]
