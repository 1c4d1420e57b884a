"""sparsejax: weight-sparse transformers with interpretable circuits, in JAX / Flax NNX / Optax.

A reimplementation of Gao et al. 2025, "Weight-sparse transformers have interpretable circuits".
"""

__version__ = "0.1.0"

from sparsejax.config import ConfigError
from sparsejax.config import GPTConfig
from sparsejax.config import load_beeg_config
from sparsejax.config import save_beeg_config
from sparsejax.model import GPT
from sparsejax.model import param_count
from sparsejax.optim import OptimConfig
from sparsejax.optim import decay_after_update
from sparsejax.optim import keep_topk
from sparsejax.optim import learning_rate_schedule
from sparsejax.optim import normalize_by_global_rms
from sparsejax.optim import sparse_adam
from sparsejax.sites import Intervention
from sparsejax.sites import canonical_site
from sparsejax.sites import site_names
from sparsejax.sites import site_width
from sparsejax.sparsity import SparsityConfig
from sparsejax.sparsity import keep_masks
from sparsejax.sparsity import measured_density
from sparsejax.sparsity import project
from sparsejax.sparsity import sparsity_spec
from sparsejax.topk import abs_topk
from sparsejax.topk import min_alive_mask
from sparsejax.topk import topk_mask
from sparsejax.topk import weight_topk_mask
from sparsejax.train_step import TrainState
from sparsejax.train_step import create_train_state
from sparsejax.train_step import init_model
from sparsejax.train_step import make_eval_step
from sparsejax.train_step import make_train_step
from sparsejax.train_step import merge
from sparsejax.train_step import next_token_loss
