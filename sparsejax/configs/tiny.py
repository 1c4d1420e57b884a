"""The CPU default: a small weight-sparse model that trains in about four minutes on 2 cores.

Three layers, d_model 128, 2048-token BPE, hidden matrices 1/8 dense (embeddings 1/4), trained on
2M tokens of the built-in corpus for 1000 steps of 16 x 128 tokens; it solves most of the 20 tasks.

  python experiments/train.py --config=experiments/configs/tiny.py --workdir=runs/tiny
"""

from sparsejax.configs.base import base_config
from sparsejax.configs.base import update


def get_config():
  return update(
      base_config(),
      model=dict(block_size=128, vocab_size=2048, n_layer=3, n_head=8, d_head=16, d_model=128,
                 d_mlp=512, rms_norm=True, tied_unembed=False, enable_bigram_table=True,
                 learnable_bigram_table=True, grad_checkpointing=False, nope=True),
      sparsity=dict(target_density=1 / 8, embed_density_factor=2.0, min_alive=4,
                    anneal_start=0.01, anneal_end=0.5),
      optim=dict(lr=2e-2, weight_decay=0.1, warmup_frac=0.01),
      data=dict(seed=0, train_tokens=2_000_000, eval_tokens=100_000, builtin_weight=1.0,
                tokenizer="bpe", bpe_vocab_size=2048, tokenizer_train_chars=2_000_000),
      train=dict(steps=1000, batch_size=16, seq_len=128, seed=0, log_every=50, eval_every=250,
                 eval_batches=4, checkpoint_every=250, keep_checkpoints=2),
  )
