"""Per-kernel costs of a compiled XLA program, from XLA's own cost analysis, loops counted right.

``compiled.cost_analysis()`` sums FLOPs and bytes over the whole module but counts a ``while`` body
once, whatever its trip count, and gives no per-kernel split. This module walks the optimized HLO
(``compiled.as_text()``) from the entry computation: every top-level instruction of a sequential
computation that is not free bookkeeping (parameter, tuple, get-tuple-element, bitcast, constant)
is one *kernel*; its FLOPs and bytes come from XLA's ``HloCostAnalysis`` run on a one-instruction
module built around it (its fused computation included), and it is executed ``multiplicity`` times:
the product of the known trip counts of the loops around it. Conditionals are charged their most
expensive branch (an upper bound) and counted.

For a loop-free program the kernel sums equal ``cost_analysis()``'s totals
(``tests/hlo_cost_test.py``).
"""

from __future__ import annotations

import collections
import dataclasses
import re

import jax

_FREE = {"parameter", "tuple", "get-tuple-element", "bitcast", "constant", "after-all",
         "partition-id", "replica-id", "opt-barrier", "add-dependency"}
_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_COMP_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*(\(.*)?\{\s*$")
_CALLED = re.compile(r"\b(calls|to_apply|body|condition|true_computation|false_computation|"
                     r"select|scatter)=%?([\w.\-]+)")
_CALLED_LIST = re.compile(r"\b(branch_computations|called_computations)=\{([^}]*)\}")


@dataclasses.dataclass
class Instr:
  name: str
  shape: str  # result shape text, layouts included
  opcode: str
  operands: list[str]
  line: str  # the instruction text without metadata
  label: str  # op_name from the metadata


@dataclasses.dataclass
class Kernel:
  """One kernel of the program, with what one execution costs and how often it runs."""

  name: str
  opcode: str
  computation: str
  flops: float
  bytes: float
  transcendentals: float
  multiplicity: int
  label: str  # op_name of the instruction (from the HLO metadata), for attribution
  matmul: bool  # a dot or convolution, alone or inside the fusion

  def time(self, peak_flops: float, bandwidth: float) -> float:
    """Roofline time of all its executions: multiplicity · max(F / peak, B / bandwidth)."""
    return self.multiplicity * max(self.flops / peak_flops, self.bytes / bandwidth)


@dataclasses.dataclass
class ProgramCost:
  kernels: list[Kernel]
  while_loops: int  # while instructions in the compiled program (each counted once)
  conditionals: int
  while_iterations: int  # sum of the loops' trip counts (times their own multiplicity)
  dynamic_loops: int = 0  # while loops without a known trip count (charged a given count)

  @property
  def flops(self) -> float:
    return sum(k.flops * k.multiplicity for k in self.kernels)

  @property
  def bytes(self) -> float:
    return sum(k.bytes * k.multiplicity for k in self.kernels)

  @property
  def kernels_executed(self) -> int:
    return sum(k.multiplicity for k in self.kernels)

  def time(self, peak_flops: float, bandwidth: float) -> float:
    return sum(k.time(peak_flops, bandwidth) for k in self.kernels)

  def by_label(self, classify, peak_flops: float, bandwidth: float) -> dict[str, list[float]]:
    """{category: [roofline seconds, bytes, flops]} with ``classify(kernel) -> category``."""
    out = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    for k in self.kernels:
      row = out[classify(k)]
      row[0] += k.time(peak_flops, bandwidth)
      row[1] += k.bytes * k.multiplicity
      row[2] += k.flops * k.multiplicity
    return dict(out)


def _strip_attr(line: str, attr: str) -> str:
  """Removes ``, attr={...}`` (balanced braces, quoted strings respected) from an HLO line."""
  key = f", {attr}="
  while True:
    i = line.find(key)
    if i < 0:
      return line
    j = i + len(key)
    if j < len(line) and line[j] == "{":
      depth, in_str = 0, False
      while j < len(line):
        c = line[j]
        if c == '"' and line[j - 1] != "\\":
          in_str = not in_str
        elif not in_str and c == "{":
          depth += 1
        elif not in_str and c == "}":
          depth -= 1
          if depth == 0:
            j += 1
            break
        j += 1
    else:
      while j < len(line) and line[j] not in ",":
        j += 1
    line = line[:i] + line[j:]


def _op_name(line: str) -> str:
  m = re.search(r'op_name="([^"]*)"', line)
  return m.group(1) if m else ""


def _split_shape_opcode(rest: str) -> tuple[str, str, str]:
  """'f32[2]{0} add(%a, %b), x=y' -> (shape, opcode, '(%a, %b), x=y')."""
  if rest.startswith("("):  # tuple shape: balanced parentheses
    depth = 0
    for i, c in enumerate(rest):
      depth += (c == "(") - (c == ")")
      if depth == 0:
        break
    shape, tail = rest[:i + 1], rest[i + 1:].lstrip()
  else:
    shape, _, tail = rest.partition(" ")
  m = re.match(r"([\w\-]+)(.*)$", tail)
  return shape, m.group(1), m.group(2)


def _operands(args: str) -> list[str]:
  """Operand names of '(%a, %b), attrs' (the first balanced parenthesis group)."""
  depth, end = 0, 0
  for i, c in enumerate(args):
    depth += (c == "(") - (c == ")")
    if depth == 0:
      end = i
      break
  return re.findall(r"%([\w.\-]+)", args[1:end])


def parse_hlo(text: str):
  """{computation name: [Instr]} and the entry computation's name."""
  comps: dict[str, list[Instr]] = {}
  entry, current = None, None
  for raw in text.splitlines():
    if current is None:
      m = _COMP_HEADER.match(raw)
      if m and not raw.startswith(" "):
        current = m.group(2)
        comps[current] = []
        if m.group(1):
          entry = current
      continue
    if raw.strip() == "}":
      current = None
      continue
    m = _INSTR.match(raw)
    if not m:
      continue
    label = _op_name(raw)
    line = raw.strip()
    for attr in ("metadata", "frontend_attributes", "statistics_viz"):
      line = _strip_attr(line, attr)
    shape, opcode, args = _split_shape_opcode(m.group(3))
    comps[current].append(Instr(m.group(2), shape, opcode,
                                _operands(args) if opcode != "constant" else [], line, label))
  return comps, entry


def _called(instr: Instr) -> list[tuple[str, str]]:
  out = [(k, v) for k, v in _CALLED.findall(instr.line)]
  for k, group in _CALLED_LIST.findall(instr.line):
    out += [(k, n.strip().lstrip("%")) for n in group.split(",") if n.strip()]
  return out


def _trip_count(instr: Instr) -> int | None:
  m = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', instr.line)
  return int(m.group(1)) if m else None


class _Analyzer:
  def __init__(self, comps, client, dynamic_trip_count: int | None):
    self.comps = comps
    self.client = client
    self.dynamic_trip_count = dynamic_trip_count
    self.shapes = {c: {i.name: i.shape for i in instrs} for c, instrs in comps.items()}
    self.cache: dict[str, dict] = {}

  def _closure(self, names: list[str]) -> list[str]:
    """Computations reachable from ``names``, callees before callers."""
    order, seen = [], set()

    def visit(n):
      if n in seen:
        return
      seen.add(n)
      for instr in self.comps[n]:
        for _, callee in _called(instr):
          visit(callee)
      order.append(n)

    for n in names:
      visit(n)
    return order

  def kernel_cost(self, comp: str, instr: Instr) -> dict:
    from jax._src.lib import _jax
    import jaxlib._hlo as hlo
    callees = [c for _, c in _called(instr)]
    parts = ["HloModule kernel", ""]
    for c in self._closure(callees):
      body = "\n".join(("  ROOT " if k == len(self.comps[c]) - 1 else "  ") + i.line.removeprefix(
          "ROOT ") for k, i in enumerate(self.comps[c]))
      parts.append(f"%{c} {{\n{body}\n}}\n")
    params = []
    rename = {}
    for n, op in enumerate(dict.fromkeys(instr.operands)):
      params.append(f"  %p{n} = {self.shapes[comp][op]} parameter({n})")
      rename[op] = f"p{n}"
    line = instr.line.removeprefix("ROOT ")
    head, eq, tail = line.partition(" = ")
    shape, opcode, args = _split_shape_opcode(tail)
    # Scheduling edges (control-predecessors={...}) name instructions outside this kernel.
    args = re.sub(r",\s*control-predecessors=\{[^}]*\}", "", args)
    args = re.sub(r"%([\w.\-]+)", lambda m: "%" + rename.get(m.group(1), m.group(1)), args)
    parts.append("ENTRY %entry {\n" + "\n".join(params) +
                 f"\n  ROOT %k = {shape} {opcode}{args}\n}}\n")
    text = "\n".join(parts)
    key = re.sub(r"\s+", " ", text)
    if key not in self.cache:
      module = hlo.hlo_module_from_text(text)
      self.cache[key] = _jax.hlo_module_cost_analysis(self.client, module)
    return self.cache[key]

  def walk(self, comp: str, mult: int, out: ProgramCost):
    for instr in self.comps[comp]:
      op = instr.opcode
      if op in _FREE:
        continue
      if op == "while":
        trips = _trip_count(instr)
        if trips is None:
          if self.dynamic_trip_count is None:
            raise ValueError(f"while loop {instr.name} has no known trip count; pass "
                             "dynamic_trip_count")
          trips = self.dynamic_trip_count
          out.dynamic_loops += 1
        called = dict(_called(instr))
        out.while_loops += 1
        out.while_iterations += trips * mult
        self.walk(called["body"], mult * trips, out)
        self.walk(called["condition"], mult * (trips + 1), out)
        continue
      if op == "conditional":
        out.conditionals += 1
        best = None
        for _, branch in _called(instr):
          sub = ProgramCost([], 0, 0, 0)
          self.walk(branch, mult, sub)
          if best is None or sub.time(1.0, 1.0) > best.time(1.0, 1.0):
            best = sub
        out.kernels += best.kernels
        out.while_loops += best.while_loops
        out.conditionals += best.conditionals
        out.while_iterations += best.while_iterations
        out.dynamic_loops += best.dynamic_loops
        continue
      if op == "call":
        called = dict(_called(instr))
        self.walk(called["to_apply"], mult, out)
        continue
      cost = self.kernel_cost(comp, instr)
      matmul = op in ("dot", "convolution") or any(
          i.opcode in ("dot", "convolution") for c in self._closure([c for _, c in _called(instr)])
          for i in self.comps[c])
      out.kernels.append(Kernel(instr.name, op, comp, cost.get("flops", 0.0),
                                cost.get("bytes accessed", 0.0), cost.get("transcendentals", 0.0),
                                mult, instr.label, matmul))


def program_cost(compiled_or_text, *, dynamic_trip_count: int | None = None) -> ProgramCost:
  """Kernels of a compiled program (``jax.stages.Compiled`` or its HLO text) with their costs."""
  text = compiled_or_text if isinstance(compiled_or_text, str) else compiled_or_text.as_text()
  comps, entry = parse_hlo(text)
  client = jax.devices("cpu")[0].client
  analyzer = _Analyzer(comps, client, dynamic_trip_count)
  out = ProgramCost([], 0, 0, 0)
  analyzer.walk(entry, 1, out)
  return out


def xla_totals(compiled) -> dict:
  c = compiled.cost_analysis()
  c = c[0] if isinstance(c, (list, tuple)) else c
  return {"flops": float(c.get("flops", 0.0)), "bytes": float(c.get("bytes accessed", 0.0))}
