"""The paper's model family (Gao et al. 2025, "csp" runs; paper-notes §1.6, §2.3).

A "1x" base of 8 layers, d_model 256, d_head 16, d_mlp 1024, widened by the expansion factor e:
d_model = 256e, n_head = 16e, d_mlp = 1024e (7.4M·e² parameters). L0 is set by ``pfrac``, the
number of nonzero parameters relative to the 1x model (hidden-matrix density pfrac / e²,
embeddings e× denser), annealed from dense over the first half of training with the sharkfin LR.
Optimizer and batch follow the official training script: lr 1.28e-2, 512 × 256 tokens per step.

  --config=experiments/configs/csp.py:4x                     e = 4, pfrac 1/4, afrac 0.25 (8 sites)
  --config=experiments/configs/csp.py:2x,pfrac=0.5,afrac=0.125
  --config=experiments/configs/csp.py:4x,dense               the dense baseline of the same shape
  --config=experiments/configs/csp.py:8x,anneal_end=0.8      the largest models anneal longer

Variant keys: e (the leading "Nx"), pfrac, afrac (a number or "none"), dense, anneal_end,
tokens (training tokens, for the step count), data_tokens (tokens prepared on disk).
"""

from sparsejax.configs.base import base_config
from sparsejax.configs.base import update
from sparsejax.utils.errors import ConfigError

ALL_SITES = "attn_in,attn_q,attn_k,attn_v,attn_out,mlp_in,mlp_neuron,mlp_out"
BATCH, N_CTX = 512, 256


def parse_variant(arg: str) -> dict:
  opts = dict(e=1, pfrac=0.25, afrac=0.25, dense=False, anneal_end=0.5, tokens=32e9,
              data_tokens=500e6)
  for part in filter(None, (arg or "1x").split(",")):
    part = part.strip()
    if part.endswith("x") and part[:-1].isdigit():
      opts["e"] = int(part[:-1])
    elif part == "dense":
      opts["dense"] = True
    elif "=" in part:
      key, value = part.split("=", 1)
      if key not in opts or key in ("e", "dense"):
        raise ConfigError(f"csp.py: unknown variant key {key!r}; valid: pfrac, afrac, "
                          "anneal_end, tokens, data_tokens")
      try:
        opts[key] = None if value.lower() == "none" else float(value)
      except ValueError:
        raise ConfigError(f"csp.py: variant {key}={value!r} is not a number") from None
    else:
      raise ConfigError(f"csp.py: cannot parse variant part {part!r} (e.g. '4x,pfrac=0.5')")
  if opts["e"] not in (1, 2, 4, 8, 16):
    raise ConfigError(f"csp.py: expansion factor must be 1, 2, 4, 8 or 16, got {opts['e']}")
  return opts


def get_config(arg: str = "1x"):
  o = parse_variant(arg)
  e = o["e"]
  dense = o["dense"]
  afrac = None if dense or o["afrac"] is None or o["afrac"] >= 1 else o["afrac"]
  steps = int(o["tokens"] // (BATCH * N_CTX))
  return update(
      base_config(),
      model=dict(block_size=N_CTX, vocab_size=2048, n_layer=8, n_head=16 * e, d_head=16,
                 d_model=256 * e, d_mlp=1024 * e, rms_norm=True, bias=True,
                 tied_unembed=False, enable_bigram_table=True, learnable_bigram_table=True,
                 activation_type="gelu", afrac=afrac, afrac_loctypes=ALL_SITES, sink=False,
                 nope=True, grad_checkpointing=True, compute_dtype="bfloat16"),
      sparsity=dict(enabled=not dense, target_density=min(1.0, o["pfrac"] / e**2),
                    embed_density_factor=float(e), min_alive=4, anneal_start=0.01,
                    anneal_end=o["anneal_end"]),
      optim=dict(lr=1.28e-2, b1=0.9, b2=0.95, eps=0.1, weight_decay=0.1, warmup_frac=0.01),
      data=dict(train_tokens=int(o["data_tokens"]), eval_tokens=2_000_000, tokenizer="bpe",
                bpe_vocab_size=2048, tokenizer_train_chars=20_000_000),
      train=dict(steps=steps, batch_size=BATCH, seq_len=N_CTX, log_every=100, eval_every=2000,
                 eval_batches=8, checkpoint_every=2000, keep_checkpoints=3, fsdp=1),
  )
