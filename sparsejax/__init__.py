"""sparsejax: weight-sparse transformers with interpretable circuits, in JAX / Flax NNX / Optax.

A reimplementation of Gao et al. 2025, "Weight-sparse transformers have interpretable circuits".
"""

__version__ = "0.1.0"

from sparsejax.utils.errors import ConfigError
from sparsejax.utils.errors import UserError
from sparsejax.model.config import GPTConfig
from sparsejax.model.config import load_beeg_config
from sparsejax.model.config import save_beeg_config
from sparsejax.interop.official import from_official
from sparsejax.interop.official import load_official
from sparsejax.interop.official import to_official
from sparsejax.interop.run_io import export_run
from sparsejax.interop.run_io import import_official
from sparsejax.interop.state_dict import read_state_dict
from sparsejax.interop.state_dict import write_state_dict
from sparsejax.model.gpt import GPT
from sparsejax.model.gpt import param_count
from sparsejax.sparse.optim import OptimConfig
from sparsejax.sparse.optim import decay_after_update
from sparsejax.sparse.optim import keep_topk
from sparsejax.sparse.optim import learning_rate_schedule
from sparsejax.sparse.optim import normalize_by_global_rms
from sparsejax.sparse.optim import sparse_adam
from sparsejax.model.sites import Intervention
from sparsejax.model.sites import canonical_site
from sparsejax.model.sites import site_names
from sparsejax.model.sites import site_width
from sparsejax.sparse.sparsity import SparsityConfig
from sparsejax.sparse.sparsity import keep_masks
from sparsejax.sparse.sparsity import measured_density
from sparsejax.sparse.sparsity import project
from sparsejax.sparse.sparsity import sparsity_spec
from sparsejax.sparse.topk import abs_topk
from sparsejax.sparse.topk import min_alive_mask
from sparsejax.sparse.topk import topk_mask
from sparsejax.sparse.topk import weight_topk_mask
from sparsejax.train.step import TrainState
from sparsejax.train.step import create_train_state
from sparsejax.train.step import init_model
from sparsejax.train.step import make_eval_step
from sparsejax.train.step import make_train_step
from sparsejax.model.gpt import merge
from sparsejax.train.step import next_token_loss
