import dataclasses
import json

import pytest

from sparsejax.model.config import ConfigError, GPTConfig, load_beeg_config, save_beeg_config
from conftest import tiny_config

# A config in the format of the released csp_sweep1 `beeg_config.json` files (fields as documented
# in paper-notes §1.1 / §1.6; values of the 1x model).
RELEASED_STYLE = {
    "block_size": 256, "vocab_size": 2048, "n_layer": 8, "n_head": 16, "d_head": 16,
    "d_model": 256, "dropout": 0.0, "bias": True, "ln_bias": True, "rms_norm": True,
    "residual_activation_type": "identity", "activation_type": "gelu", "afrac": 0.125,
    "afrac_loctypes": "attn_in,attn_out,mlp_in,mlp_out,mlp_neuron,attn_v", "tied_unembed": False,
    "tokenizer_name": "tinypython_2k", "grad_checkpointing": True, "n_mlp": 1024,
    "enable_bigram_table": True, "learnable_bigram_table": True, "d_pos_emb": None,
    "dropout_cat_pos_emb": False, "sinusoidal_cat_pos_emb": False, "enable_sparse_kernels": False,
    "flash": True, "sink": False, "pfrac": 0.125, "expansion_factor": 1, "debug_exact_topk": False,
}


def test_official_defaults():
  cfg = GPTConfig()
  assert (cfg.block_size, cfg.vocab_size, cfg.n_layer, cfg.n_head, cfg.d_model) == (
      1024, 50304, 12, 12, 768)
  assert cfg.d_head is None and cfg.head_dim == 64 and cfg.mlp_dim == 3072
  assert cfg.bias and cfg.ln_bias and not cfg.rms_norm and cfg.tied_unembed
  assert cfg.afrac is None and cfg.loctypes == ()
  assert cfg.afrac_loctypes == "attn_in,attn_out,mlp_in,mlp_out"
  assert cfg.activation_type == "gelu" and cfg.residual_activation_type == "identity"


def test_released_style_config_loads_and_round_trips(tmp_path):
  src = tmp_path / "beeg_config.json"
  src.write_text(json.dumps(RELEASED_STYLE))
  cfg = load_beeg_config(src)
  assert cfg.d_mlp == 1024 and cfg.mlp_dim == 1024  # n_mlp renamed
  assert cfg.loctypes == ("attn_in", "attn_out", "mlp_in", "mlp_out", "mlp_neuron", "attn_v")
  assert cfg.extra == {"pfrac": 0.125, "expansion_factor": 1, "debug_exact_topk": False}
  assert cfg.unknown_keys() == []  # all three are documented extra keys

  out = tmp_path / "saved.json"
  save_beeg_config(cfg, out)
  written = json.loads(out.read_text())
  assert written["pfrac"] == 0.125 and written["d_mlp"] == 1024
  assert written["bigram_table_rank"] is None  # the official load_model pops it unconditionally
  side = json.loads((tmp_path / "saved.sparsejax.json").read_text())
  for key, value in RELEASED_STYLE.items():
    if key != "n_mlp":
      assert (written[key] if key in written else side[key]) == value, key
  again = load_beeg_config(out)
  # The keys the official side needs come back with their written (default) values.
  assert again == cfg and again.extra == dict(cfg.extra, bigram_table_rank=None, debug_nans=False)


def test_saved_config_holds_only_what_the_official_loader_accepts(tmp_path):
  """The official GPTConfig is a dataclass: an unknown keyword (``nope``, ``compute_dtype``,
  ``expansion_factor``) makes its constructor fail, so those go to the side file."""
  from sparsejax.model.config import LOADER_POPPED_KEYS, OFFICIAL_FIELDS
  cfg = GPTConfig.from_dict(dict(RELEASED_STYLE, nope=True, compute_dtype="bfloat16"))
  save_beeg_config(cfg, tmp_path / "beeg_config.json")
  written = json.loads((tmp_path / "beeg_config.json").read_text())
  assert set(written) == set(OFFICIAL_FIELDS) | set(LOADER_POPPED_KEYS)
  assert written["debug_nans"] is False  # official field sparsejax does not model: its default
  side = json.loads((tmp_path / "beeg_config.sparsejax.json").read_text())
  assert side["nope"] is True and side["compute_dtype"] == "bfloat16"
  assert side["expansion_factor"] == 1 and "pfrac" not in side
  again = load_beeg_config(tmp_path / "beeg_config.json")
  assert again == cfg and again.nope and again.compute_dtype == "bfloat16"
  # Every dataclass field is official or sparsejax-only; none is lost by the split.
  fields = {f.name for f in dataclasses.fields(GPTConfig)} - {"extra"}
  assert fields <= set(written) | set(side)


def test_unknown_keys_are_kept_and_reported(tmp_path, caplog):
  data = dict(RELEASED_STYLE, my_new_knob=3)
  src = tmp_path / "c.json"
  src.write_text(json.dumps(data))
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.INFO)
  cfg = load_beeg_config(src)
  assert cfg.unknown_keys() == ["my_new_knob"]
  assert cfg.to_dict()["my_new_knob"] == 3
  assert "my_new_knob" in caplog.text


@pytest.mark.parametrize("overrides, field", [
    (dict(d_model=30, n_head=4, d_head=None), "d_model"),
    (dict(afrac=0.0), "afrac"),
    (dict(afrac=1.5), "afrac"),
    (dict(afrac=float("nan")), "afrac"),
    (dict(afrac=0.25, afrac_loctypes="attn_in,mlp_bogus"), "afrac_loctypes"),
    (dict(activation_type="tanh"), "activation_type"),
    (dict(residual_activation_type="gelu"), "residual_activation_type"),
    (dict(n_layer="8"), "n_layer"),
    (dict(n_layer=8.0), "n_layer"),
    (dict(rms_norm=1), "rms_norm"),
    (dict(n_head=0), "n_head"),
    (dict(dropout=0.1), "dropout"),
    (dict(sinusoidal_cat_pos_emb=True), "sinusoidal_cat_pos_emb"),
    (dict(nope=True, d_pos_emb=8), "nope"),
    (dict(compute_dtype="float16"), "compute_dtype"),
    (dict(afrac=0.01), "afrac"),  # keeps 0 of a width-32 site
])
def test_bad_values_raise_one_clear_error(overrides, field):
  with pytest.raises(ConfigError, match=rf"^GPTConfig\.{field}: "):
    tiny_config(**overrides)


def test_bad_json_is_a_config_error(tmp_path):
  src = tmp_path / "c.json"
  src.write_text("{not json")
  with pytest.raises(ConfigError, match="not valid JSON"):
    load_beeg_config(src)
  src.write_text("[1, 2]")
  with pytest.raises(ConfigError, match="expected a JSON object"):
    load_beeg_config(src)


def test_config_is_hashable_and_frozen():
  cfg = tiny_config()
  assert hash(cfg) == hash(tiny_config())
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.n_layer = 3
