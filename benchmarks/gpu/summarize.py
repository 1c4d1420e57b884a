"""Turns a GPU-suite output directory into text for ``benchmarks/RESULTS.md``: the device string,
each item's status, time and result line, its table, and the decisions the suite's rules imply.

  python benchmarks/gpu/summarize.py $OUT [LOG_DIR] > $OUT/RESULTS.md

LOG_DIR (default: $OUT) holds the items' <item>.log files; status.jsonl is read from $OUT.
"""

from __future__ import annotations

import json
import os
import re
import sys


# XLA's multi-line slow-constant-folding alarm, which the [IWE]MMDD filter does not catch.
_XLA_NOISE = re.compile(r"^\s*%\S+ = |^This isn't necessarily a bug|^If you'd like to file a bug|"
                        r"^Constant folding an instruction|^The operation took")


def last_value(text: str, name: str) -> float | None:
  m = re.findall(rf"^{re.escape(name)}: ([-0-9.eE]+|None)$", text, re.M)
  return float(m[-1]) if m and m[-1] != "None" else None


def main(out_dir: str, log_dir: str | None = None) -> None:
  status = [json.loads(line) for line in open(os.path.join(out_dir, "status.jsonl"))]
  log_dir = log_dir or out_dir
  logs = {s["item"]: open(os.path.join(log_dir, f"{s['item']}.log")).read() for s in status}
  device = next((line for text in logs.values() for line in text.splitlines()
                 if line.startswith("device: ")), "device: unknown")
  print(f"## GPU suite: {device.removeprefix('device: ')}\n")
  print("| item | status | seconds | result |")
  print("|---|---|---|---|")
  for s in status:
    lines = [line for line in logs[s["item"]].splitlines() if re.match(r"^\w+: \S+$", line)]
    result = lines[-1] if lines else ""
    print(f"| {s['item']} | {s['status']} | {s['seconds']:.0f} | `{result}` |")
  v = lambda item, name: last_value(logs.get(item, ""), name)
  peak = v("1_calibrate", "calibrate_matmul_tflops")
  decisions = []
  step = logs.get("2_step", "")
  mfu = re.search(r"^dense\s.*\s([0-9.]+)%$", step, re.M)
  if mfu:
    decisions.append(f"G1 dense-path MFU vs the measured peak ({peak} TFLOP/s): {mfu.group(1)} % "
                     "(goal >= 45 %)")
  for name, goal in (("sparse_over_dense_step", 1.15), ("sparse_abstopk_over_dense_step", 1.3)):
    r = v("2_step", name)
    if r is not None:
      decisions.append(f"{name} = {r:.2f} (goal <= {goal}): {'met' if r <= goal else 'NOT met'}")
  cudnn = v("4_attention", "cudnn_speedup_vs_einsum")
  if cudnn is not None:
    decisions.append(f"cuDNN attention {cudnn:.1f}x the einsum at fwd+bwd: "
                     + ("keep attention_impl=auto (cuDNN)" if cudnn >= 1 else
                        "slower than the einsum: set attention_impl=einsum as the GPU default"
                        if cudnn > 0 else
                        "cuDNN unavailable for this shape: auto falls back to einsum; check the "
                        "log"))
  best = v("3_abstopk", "abstopk_best_candidates")
  if best is not None:
    decisions.append(f"fastest AbsTopK candidates per pass: {best:.0f} (set "
                     "topk._DEFAULT_CANDIDATES['gpu'] to it if it differs)")
  proj = v("5_projection", "projection_over_adamw")
  if proj is not None:
    decisions.append(f"projection / AdamW update = {proj:.2f} (goal <= 0.25): "
                     f"{'met' if proj <= 0.25 else 'NOT met'}")
  speed = v("7_topk", "topk_speedup_vs_lax")
  if speed is not None:
    decisions.append(f"topk_speedup_vs_lax = {speed:.1f} (goal >= 20 at 16.8M elements)")
  overlap = v("8_profile", "profile_sparse_overlap_ms")
  if overlap is not None:
    decisions.append(f"host time hidden per full-sparse step: {overlap:.2f} ms (near 0 means the "
                     "step waits for the host: compare sparsity.warm_start=False)")
  dense_ms = lambda item: re.search(r"^dense\s+([0-9.]+)\s", logs.get(item, ""), re.M)
  loop, scan = dense_ms("2_step"), dense_ms("9_scan")
  if loop and scan:
    decisions.append(f"scanned layers: dense step {scan.group(1)} ms vs {loop.group(1)} ms "
                     "(first-call seconds in the logs: compile time); make scan_layers the GPU "
                     "default only if both are not worse")
  print("\n### Decisions\n")
  for d in decisions:
    print(f"- {d}")
  for s in status:
    print(f"\n### {s['item']} ({s['status']}, {s['seconds']:.0f} s)\n\n```")
    print("\n".join(line for line in logs[s["item"]].splitlines()
                    if not re.match(r"^[IWE]\d{4} ", line) and not _XLA_NOISE.search(line))[-4000:])
    print("```")


if __name__ == "__main__":
  main(*sys.argv[1:3])
