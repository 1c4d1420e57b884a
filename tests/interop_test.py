"""Released-model interop: the code-free checkpoint reader, the official-name mapping, logits
parity with the official forward pass, export back, and import → evaluate → prune → view.

Fixtures (tests/data/official/, from the official inference code on random weights): two model
directories with the official logits on fixed tokens, and four released ``beeg_config.json`` files.
tests/data/torch_layouts*.pt are what torch.save writes for the layouts a reader must handle
(made by tests/data/make_torch_layouts.py). No test needs torch; the ones that check torch reads
what we write are skipped without it.
"""

import importlib.util
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.interop import official, run_io, torch_format
from sparsejax.interop.state_dict import read_state_dict, write_state_dict
from sparsejax.model.config import load_beeg_config
from sparsejax.model.gpt import merge, sinusoidal_positions
from sparsejax.train.runs import RunError, load_run
from sparsejax.train.step import init_model
from sparsejax.utils.errors import ConfigError, FileFormatError
from conftest import tiny_config, train_tiny_bpe_run

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
OFFICIAL = DATA / "official"
FIXTURES = ("sweep_like", "catpos_sink_ln")
RELEASED = sorted((OFFICIAL / "released_configs").glob("*.json"))


def tree_equal(a, b) -> bool:
  same_structure = jax.tree.structure(a) == jax.tree.structure(b)
  return same_structure and all(
      x.dtype == y.dtype and np.array_equal(x, y)
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def official_logits(model: official.OfficialModel, tokens) -> np.ndarray:
  graphdef, _, _ = init_model(model.config)
  return np.asarray(merge(graphdef, model.params, model.buffers)(jnp.asarray(tokens)))


# ---------------------------------------------------------------------- the reader
@pytest.mark.parametrize("name", ["torch_layouts.pt", "torch_layouts_big.pt"])
def test_reader_rebuilds_every_layout_torch_writes(name):
  """float32 / bfloat16 / float16 / int64 / bool storages, a transpose (strides), a slice
  (storage offset), names sharing a storage, 0-d and empty tensors, a Module state_dict with
  ``_metadata``; little- and big-endian archives."""
  got = torch_format.read_torch_checkpoint(DATA / name)
  want = np.load(DATA / "torch_layouts.npz")
  assert list(got) == list(want.files)
  for key in want.files:
    assert got[key].shape == want[key].shape, key
    assert np.array_equal(got[key].astype(want[key].dtype), want[key]), key
  assert got["bf16"].dtype.name == "bfloat16" and got["f16"].dtype == np.float16
  assert got["i64"].dtype == np.int64 and got["i64"][1] == 10**12 - 3
  assert np.array_equal(got["transposed"], got["base"].T)
  assert np.array_equal(got["slice"], got["base"][1:3, 2:5])
  assert got["tied"] is got["base"]  # one pickled object under two names, as torch.load gives
  got["base"][0, 0] = 99.0  # a view is its own copy, not an alias of its storage
  assert got["transposed"][0, 0] != 99.0 and got["slice"].base is None


def _crafted_checkpoint(path, payload) -> None:
  """A zip laid out like torch.save's, whose data.pkl is ``pickle.dumps(payload)``."""
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
    z.writestr("archive/byteorder", "little")
    z.writestr("archive/version", "3\n")


class _RunsACommand:
  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return (os.system, (self.command,))


def test_a_pickle_that_would_run_a_command_is_refused_and_nothing_runs(tmp_path):
  marker = tmp_path / "pwned"
  ckpt = tmp_path / "final_model.pt"
  _crafted_checkpoint(ckpt, {"w": _RunsACommand(f"touch {marker}")})
  with pytest.raises(torch_format.UnsafeCheckpointError,
                     match=rf"names the global {os.system.__module__}\.system"):
    read_state_dict(ckpt)
  assert not marker.exists()
  # The same through the whole importer: one clear error, no run directory, nothing executed.
  (tmp_path / "model").mkdir()
  ckpt.rename(tmp_path / "model" / "final_model.pt")
  (tmp_path / "model" / "beeg_config.json").write_text(json.dumps(tiny_config().official_dict()))
  with pytest.raises(torch_format.UnsafeCheckpointError):
    run_io.import_official(str(tmp_path / "model"), str(tmp_path / "run"), progress=lambda _: 0)
  assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("payload, match", [
    ([1, 2], "holds a list, not a state_dict"),
    ({"w": 3}, "not a state_dict of tensors"),
])
def test_files_that_are_not_state_dicts_are_clear_errors(tmp_path, payload, match):
  ckpt = tmp_path / "x.pt"
  _crafted_checkpoint(ckpt, payload)
  with pytest.raises(FileFormatError, match=match):
    read_state_dict(ckpt)
  (tmp_path / "legacy.pt").write_bytes(pickle.dumps({"w": 1}))
  with pytest.raises(FileFormatError, match="not a zip-format torch checkpoint"):
    read_state_dict(tmp_path / "legacy.pt")


def test_writer_round_trips_dtypes_and_keeps_tied_entries_in_one_storage(tmp_path):
  import ml_dtypes
  w = np.arange(12, dtype=np.float32).reshape(3, 4)
  tensors = {"w": w, "tied": w, "t": w.T, "bf16": np.asarray([1.5, -2.0], ml_dtypes.bfloat16),
             "i64": np.asarray([2**40, -1]), "scalar": np.float32(3.0)}
  write_state_dict(tmp_path / "a.pt", tensors)
  got = read_state_dict(tmp_path / "a.pt")
  for k, v in tensors.items():
    assert got[k].dtype == np.asarray(v).dtype and np.array_equal(got[k], v), k
  with zipfile.ZipFile(tmp_path / "a.pt") as z:  # w and tied: one storage record
    assert sum("/data/" in n for n in z.namelist()) == len(tensors) - 1
    for info in z.infolist():  # storages start at 64-byte offsets (torch can memory-map them)
      assert (info.header_offset + 30 + len(info.filename) + len(info.extra)) % 64 == 0
  (tmp_path / "again").mkdir()
  write_state_dict(tmp_path / "again" / "a.pt", tensors)  # deterministic bytes
  assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "again" / "a.pt").read_bytes()
  write_state_dict(tmp_path / "c.npz", {k: v for k, v in tensors.items() if k != "bf16"})
  assert np.array_equal(read_state_dict(tmp_path / "c.npz")["t"], w.T)


def test_torch_reads_what_we_write():
  torch = pytest.importorskip("torch")
  import tempfile
  src = OFFICIAL / "catpos_sink_ln" / "final_model.pt"
  ours = read_state_dict(src)
  assert tree_equal(ours, read_state_dict(src, reader="torch"))
  with tempfile.TemporaryDirectory() as tmp:
    model = official.load_official(str(OFFICIAL / "catpos_sink_ln"))
    path = os.path.join(tmp, "final_model.pt")
    write_state_dict(path, official.to_official(model.params, model.buffers, model.config))
    for mmap in (False, True):
      back = torch.load(path, weights_only=True, mmap=mmap)
      official_sd = torch.load(src, weights_only=True)
      assert list(back) == list(official_sd)
      for k in official_sd:
        assert torch.equal(back[k], official_sd[k]), k
      assert back["lm_head.weight"].data_ptr() == back["transformer.wte.weight"].data_ptr()
    assert tree_equal(read_state_dict(DATA / "torch_layouts.pt", reader="torch"),
                      read_state_dict(DATA / "torch_layouts.pt"))


# ---------------------------------------------------------------------- the mapping and parity
@pytest.mark.parametrize("name", FIXTURES)
def test_logits_match_the_official_forward_pass(name):
  src = OFFICIAL / name
  model = official.load_official(str(src))
  logits = official_logits(model, np.load(src / "tokens.npy"))
  want = np.load(src / "logits.npy")
  err = float(np.max(np.abs(logits - want)))
  print(f"{name}: max |Δ logits| = {err:.3g} (float32)")
  assert logits.shape == want.shape and err <= 1e-4


@pytest.mark.parametrize("name", FIXTURES)
def test_every_key_is_accounted_for_and_export_gives_the_same_state_dict(name, tmp_path):
  src = OFFICIAL / name
  state = read_state_dict(src / "final_model.pt")
  model = official.load_official(str(src))
  r = model.report
  assert not r.unused and not r.defaulted
  assert set(r.loaded) | set(r.checked) == set(state)
  back = official.to_official(model.params, model.buffers, model.config)
  assert list(back) == list(state)  # torch's key order
  assert all(np.array_equal(back[k], state[k]) for k in state)
  # Sparsity is read as is: the densities reported are the file's, matrix by matrix.
  for key, row in r.matrices.items():
    assert row["nonzero"] == np.count_nonzero(state[key]), key
  assert r.group_density(official.HIDDEN) == 0.25
  if model.config.tied_unembed:
    assert "lm_head.weight" in r.checked and back["lm_head.weight"] is back[
        "transformer.wte.weight"]


def test_edges_are_counted_on_the_checkpoint_zeros():
  from sparsejax.circuits.graph import find_edges
  src = OFFICIAL / "sweep_like"
  model = official.load_official(str(src))
  w = read_state_dict(src / "final_model.pt")["transformer.h.1.mlp.c_fc.weight"]  # (out, in)
  cfg = model.config
  nodes = {"1.mlp.act_in": list(range(cfg.d_model)), "1.mlp.post_act": list(range(cfg.mlp_dim))}
  edges, _ = find_edges(nodes, model.params, cfg)
  assert len(edges) == np.count_nonzero(w) == w.size // 4
  assert all(w[e["dst_index"], e["src_index"]] == e["weight"] != 0 for e in edges)


def _mutated(name, change):
  state = read_state_dict(OFFICIAL / name / "final_model.pt")
  change(state)
  return state, load_beeg_config(OFFICIAL / name / "beeg_config.json")


def test_missing_final_logits_bias_is_zeros_and_extra_keys_are_reported():
  def change(state):
    del state["final_logits_bias"]
    state["optimizer_step"] = np.asarray(7, np.int64)
  state, cfg = _mutated("sweep_like", change)
  params, buffers, report = official.from_official(state, cfg)
  assert np.array_equal(buffers["final_logits_bias"], np.zeros(cfg.vocab_size))
  assert "final_logits_bias" in report.defaulted and report.unused == ["optimizer_step"]


@pytest.mark.parametrize("name, change, match", [
    ("sweep_like",
     lambda s: [s.pop(k) for k in ("transformer.h.1.mlp.c_fc.bias", "transformer.ln_f.weight")],
     "transformer.h.1.mlp.c_fc.bias is missing; transformer.ln_f.weight is missing"),
    ("sweep_like",
     lambda s: s.update({"transformer.h.0.attn.c_attn.weight": np.zeros((96, 33), np.float32)}),
     r"c_attn.weight has shape \(96, 33\), the config needs \(96, 32\)"),
    ("catpos_sink_ln", lambda s: s.update({"lm_head.weight": s["transformer.wte.weight"] + 1}),
     "lm_head.weight differs from transformer.wte.weight, but the config has tied_unembed"),
    ("catpos_sink_ln", lambda s: s.pop("transformer.h.0.attn.attn_imp.sink_logit"),
     "transformer.h.0.attn.attn_imp.sink_logit is missing"),
    ("sweep_like",
     lambda s: s.update({official.mask_name(0): np.ones((1, 1, 64, 64), np.float32)}),
     "transformer.h.0.attn.bias is not the causal mask"),
])
def test_checkpoints_that_do_not_fit_the_config_name_every_problem(name, change, match):
  state, cfg = _mutated(name, change)
  with pytest.raises(official.CheckpointMismatchError, match=match):
    official.from_official(state, cfg)


def test_causal_mask_buffers_of_non_flash_models_are_checked_and_exported():
  cfg = tiny_config(flash=False, sink=True)
  _, params, buffers = init_model(cfg)
  state = official.to_official(params, buffers, cfg)
  assert state[official.mask_name(1)].shape == (1, 1, cfg.block_size, cfg.block_size)
  assert "transformer.h.1.attn.attn_imp.sink_logit" in state
  p2, b2, report = official.from_official(state, cfg)
  assert tree_equal(p2, jax.device_get(params)) and tree_equal(b2, jax.device_get(buffers))
  assert official.mask_name(0) in report.checked


def test_frozen_sinusoids_come_from_the_checkpoint_not_regenerated():
  """The official table is computed in the checkpoint's float32; ours in float64 differs."""
  cfg = tiny_config(d_pos_emb=8, sinusoidal_cat_pos_emb=True, block_size=1024)
  _, params, buffers = init_model(cfg)
  state = official.to_official(params, buffers, cfg)
  pos = np.arange(1024, dtype=np.float32)[:, None]
  periods = np.logspace(np.log10(4.0), np.log10(1024.0), 4, dtype=np.float32)
  angles = pos * (np.float32(2 * np.pi) / periods)
  table = np.concatenate([np.sin(angles), np.cos(angles)], 1).astype(np.float32)
  assert not np.array_equal(table, np.asarray(sinusoidal_positions(1024, 8)))
  state["transformer.wpe.weight"] = table
  _, got, _ = official.from_official(state, cfg)
  assert np.array_equal(got["wpe"], table)


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: p.name.split(".beeg")[0])
def test_released_configs_load_with_their_extra_keys_reported(path):
  cfg = load_beeg_config(path)
  raw = json.loads(path.read_text())
  assert cfg.unknown_keys() == []  # every extra key is documented, none rejected
  assert {"pfrac", "expansion_factor", "sparse_matmul_impl"} <= set(cfg.extra)
  assert set(cfg.extra) == set(raw) - {f for f in raw if f in cfg.to_dict() and f not in cfg.extra}
  shapes = official.official_shapes(cfg)  # the mapping covers the model (nothing allocated)
  assert shapes["transformer.h.0.mlp.c_fc.weight"] == (cfg.mlp_dim, cfg.d_model)
  assert ("bigram_table" in {e.name for e in official.official_entries(cfg)}) == (
      cfg.enable_bigram_table)
  kept = run_io.run_config_for(
      official.OfficialModel(cfg, {}, {}, official.ImportReport("x"), "x"), str(path.parent),
      None, 1000).sparsity
  assert kept.target_density == min(1.0, raw["pfrac"] / raw["expansion_factor"] ** 2)
  assert kept.enabled == (kept.target_density < 1.0)


# ---------------------------------------------------------------------- runs
def test_imported_run_without_tokenizer_runs_on_token_ids_and_round_trips(tmp_path):
  src = OFFICIAL / "sweep_like"
  report = run_io.import_official(str(src), str(tmp_path / "run"), progress=lambda _: 0)
  run = load_run(str(tmp_path / "run"))
  assert run.step == 0 and not run.has_tokenizer
  tokens = np.load(src / "tokens.npy")
  logits, cache = run.model().run_with_cache(jnp.asarray(tokens), ["0.mlp.post_act"])
  assert float(np.max(np.abs(np.asarray(logits) - np.load(src / "logits.npy")))) <= 1e-4
  assert cache["0.mlp.post_act"].shape == tokens.shape + (96,)
  with pytest.raises(RunError, match="has no tokenizer, and this stage needs text"):
    run.tokenizer
  saved = json.loads((tmp_path / "run" / "import_report.json").read_text())
  assert saved["matrices"] == report.matrices and saved["hidden_density"] == 0.25
  assert saved["config_extra"]["pfrac"] == 0.25
  assert run.config.sparsity.target_density == 0.25  # pfrac / expansion_factor²
  # Export (any step) → import → export: same tensors, same config, same bytes.
  run_io.export_run(str(tmp_path / "run"), str(tmp_path / "exp"), progress=lambda _: 0)
  exported = read_state_dict(tmp_path / "exp" / "final_model.pt")
  original = read_state_dict(src / "final_model.pt")
  assert list(exported) == list(original) and tree_equal(exported, original)
  assert json.loads((tmp_path / "exp" / "beeg_config.json").read_text())["pfrac"] == 0.25
  run_io.import_official(str(tmp_path / "exp"), str(tmp_path / "run2"), progress=lambda _: 0)
  again = load_run(str(tmp_path / "run2"))
  assert again.config == run.config and tree_equal(again.params, run.params)
  assert tree_equal(again.buffers, run.buffers)
  run_io.export_run(str(tmp_path / "run2"), str(tmp_path / "exp2"), progress=lambda _: 0)
  for f in ("final_model.pt", "beeg_config.json", "beeg_config.sparsejax.json"):
    assert (tmp_path / "exp" / f).read_bytes() == (tmp_path / "exp2" / f).read_bytes(), f
  # The stages that need text say so in one line.
  res = subprocess.run([sys.executable, str(ROOT / "experiments" / "prune.py"),
                        f"--workdir={tmp_path / 'run'}", "--tasks=var_swap"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert res.returncode == 1 and "Traceback" not in res.stderr
  assert "has no tokenizer, and pruning needs text" in res.stderr.strip().splitlines()[-1]


def test_import_and_export_refuse_to_overwrite_and_check_the_tokenizer(tmp_path):
  src = str(OFFICIAL / "sweep_like")
  (tmp_path / "busy").mkdir()
  (tmp_path / "busy" / "keep.txt").write_text("mine")
  with pytest.raises(ConfigError, match="already exists and is not empty"):
    run_io.import_official(src, str(tmp_path / "busy"), progress=lambda _: 0)
  assert os.listdir(tmp_path / "busy") == ["keep.txt"]
  tok = tmp_path / "tok.json"  # a 257-token byte tokenizer for a 128-token model
  from sparsejax.data.tokenizer import ByteTokenizer
  ByteTokenizer().save(str(tok))
  with pytest.raises(ConfigError, match="has 257 tokens, the model's vocab_size is 128"):
    run_io.import_official(src, str(tmp_path / "new"), tokenizer_dir=str(tok),
                           progress=lambda _: 0)
  assert not (tmp_path / "new").exists()
  with pytest.raises(ConfigError, match="holds neither the tinypython_2k files"):
    run_io.import_official(src, str(tmp_path / "new"), tokenizer_dir=str(tmp_path / "busy"),
                           progress=lambda _: 0)


def test_safetensors_export_imports_back_identically(tmp_path):
  pytest.importorskip("safetensors")
  run_io.import_official(str(OFFICIAL / "catpos_sink_ln"), str(tmp_path / "run"),
                         progress=lambda _: 0)
  run_io.export_run(str(tmp_path / "run"), str(tmp_path / "exp"), fmt="safetensors",
                    progress=lambda _: 0)
  model = official.load_official(str(tmp_path / "exp"))
  want = official.load_official(str(OFFICIAL / "catpos_sink_ln"))
  assert model.checkpoint.endswith(".safetensors") and model.config == want.config
  assert tree_equal(model.params, want.params) and tree_equal(model.buffers, want.buffers)


def test_official_directory_from_a_sparsejax_run_imports_evaluates_prunes_and_views(tmp_path):
  """The whole workflow of a downloaded model, on one exported from a tiny BPE run."""
  from sparsejax import pipeline
  from sparsejax.circuits import prune, prune_run
  from sparsejax.circuits.graph import find_edges
  train_tiny_bpe_run(tmp_path / "trained", steps=4)
  run_io.export_run(str(tmp_path / "trained"), str(tmp_path / "official"), progress=lambda _: 0)
  res = subprocess.run([sys.executable, str(ROOT / "experiments" / "import_official.py"),
                        f"--src={tmp_path / 'official'}", f"--workdir={tmp_path / 'run'}",
                        "--eval_tokens=4096"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "hidden matrices: density" in res.stdout and "wrote run" in res.stdout
  work = str(tmp_path / "run")
  trained, run = load_run(str(tmp_path / "trained")), load_run(work)
  assert tree_equal(run.params, trained.params) and run.config.model == trained.config.model
  name = "var_swap"
  results = pipeline.evaluate_tasks(work, [name], pairs=8, progress=lambda _: 0)
  assert json.loads((tmp_path / "run" / "task_eval.json").read_text())["tasks"][name] == (
      results[name])
  spec = importlib.util.spec_from_file_location("prune_configs",
                                                ROOT / "experiments" / "configs" / "prune.py")
  prune_configs = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(prune_configs)
  # The :quick config, shrunk. A 4-step model is at chance on the task, so the target is set
  # above its loss for the task to count as solved and be pruned (edge counting on the real
  # zeros is tested on the sweep fixture above).
  values = dict(prune_configs.get_config("quick").to_dict(), steps=4, chunk_steps=2,
                train_pairs=8, val_pairs=8, test_pairs=8, batch_pairs=4, mean_tokens=512,
                random_circuits=0, control=False, calibrate=False, bisect_grid=2,
                target_loss=2.0 * results[name]["loss"])
  cfg = prune.PruneConfig(**values)
  result = prune_run.Pruner(run, cfg, lambda _: 0).prune_tasks([name])
  prune_run.write_outputs(result, os.path.join(work, "prune"))
  assert os.path.exists(os.path.join(work, "prune", "means_step0_512.npy"))  # held-out text
  circuit = result.circuits[name]
  edges, _ = find_edges(circuit.nodes, trained.params, trained.config.model)
  assert circuit.n_edges == len(edges)
  index = pipeline.build_viewer(work, os.path.join(work, "prune"), progress=lambda _: 0)
  assert Path(index).exists() and (Path(index).parent / f"task_{name}.html").exists()
