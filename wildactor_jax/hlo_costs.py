"""Per-device costs of a compiled step, read from its optimized HLO text (`compiled.as_text()`).

XLA's own cost analysis counts a loop body once whatever its trip count and sees a Mosaic kernel
as an opaque call. This reads the SPMD-partitioned, optimized module instead and weights every
instruction by the trip counts of the while loops around it (XLA's `known_trip_count`, else the
bound in a scan's loop condition), so one compile of the real step gives:
- FLOPs of dots and convolutions (2 per multiply-add; elementwise work is not counted);
- HBM bytes of the top-level instructions (each fusion, copy, collective, custom call reads its
  operands and writes its result once): a fusion parameter read only through a slice costs the
  slice, an in-place dynamic-update-slice costs its update. Unlike XLA's cost analysis, arrays
  that memory-space assignment placed on chip (a layout with S(n), n > 0: TPU VMEM) cost
  nothing; the asynchronous copies that bring them in count as HBM reads. Each Mosaic kernel's
  own operand/result bytes are kept apart (`kernel_bytes`), so a roofline can swap them for the
  kernel's analytic traffic;
- the collectives: for each all-gather / reduce-scatter / all-reduce / all-to-all /
  collective-permute, the bytes one device sends or receives over ICI (ring algorithms), with
  the devices of its group, so a roofline can ask which torus dimensions the group spans.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import re

import numpy as np

DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2,
               "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
               "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1, "f8e4m3b11fnuz": 1, "f8e4m3fnuz": 1,
               "f8e5m2fnuz": 1, "token": 0}
_SHAPE = re.compile(r"\b(" + "|".join(sorted(DTYPE_BYTES, key=len, reverse=True))
                    + r")\[([\d,]*)\](\{[^}]*\})?")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_NAME = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*")
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
# Instructions that move no HBM bytes of their own (aliases, tuples, control flow, constants).
_FREE = {"parameter", "tuple", "get-tuple-element", "bitcast", "constant", "while", "call",
         "conditional", "after-all", "partition-id", "replica-id", "opt-barrier",
         "all-gather-done", "all-reduce-done", "collective-permute-done", "async-done",
         "async-update", "copy-done", "slice-done", "send-done", "recv-done", "get-dimension-size"}


def shape_dims(text: str, hbm_only: bool = False) -> list[tuple[str, tuple[int, ...]]]:
  """Every array shape in `text` (a type, possibly a tuple): [(dtype, dims)]. hbm_only: leave
  out arrays whose layout puts them in another memory space than HBM (S(1): TPU VMEM)."""
  return [(t, tuple(int(d) for d in dims.split(",") if d)) for t, dims, layout in _SHAPE.findall(text)
          if not (hbm_only and re.search(r"S\([1-9]\d*\)", layout))]


def shape_bytes(text: str, hbm_only: bool = True) -> float:
  return float(sum(DTYPE_BYTES[t] * math.prod(d) for t, d in shape_dims(text, hbm_only)))


def tuple_elements(type_text: str) -> list[str]:
  """The top-level element types of a tuple type "(a, (b, c), d)"; [type_text] for an array."""
  text = re.sub(r"/\*.*?\*/", "", type_text).strip()
  return _split_operands(text[1:-1]) if text.startswith("(") else [text]


def _balanced(s: str, i: int) -> int:
  """Index just past the bracket group opening at s[i]."""
  depth = 0
  for j in range(i, len(s)):
    if s[j] in "([{":
      depth += 1
    elif s[j] in ")]}":
      depth -= 1
      if depth == 0:
        return j + 1
  raise ValueError(f"unbalanced HLO text: {s[i:i + 80]!r}")


@dataclasses.dataclass
class Instruction:
  name: str
  type: str                   # result type text
  opcode: str
  operands: list[str]         # operand texts ("%name", or "type %name" in older dumps)
  attrs: str
  root: bool = False

  @property
  def operand_names(self) -> list[str]:
    return [o.split("%")[-1].strip() for o in self.operands]

  def attr(self, key: str) -> str | None:
    m = re.search(r"\b" + re.escape(key) + r"=(%?[\w.\-]+|\{[^}]*\})", self.attrs)
    return m.group(1).lstrip("%") if m else None


def _split_operands(s: str) -> list[str]:
  out, depth, start = [], 0, 0
  for j, c in enumerate(s):
    if c in "([{":
      depth += 1
    elif c in ")]}":
      depth -= 1
    elif c == "," and depth == 0:
      out.append(s[start:j].strip())
      start = j + 1
  if s[start:].strip():
    out.append(s[start:].strip())
  return out


def parse_instruction(line: str) -> Instruction | None:
  m = _NAME.match(line)
  if not m:
    return None
  rest = line[m.end():]
  if rest.startswith("("):  # tuple type
    end = _balanced(rest, 0)
  else:
    end = rest.index(" ")
  type_, rest = rest[:end], rest[end:].lstrip()
  paren = rest.index("(")
  opcode = rest[:paren]
  close = _balanced(rest, paren)
  return Instruction(m.group(1), type_, opcode, _split_operands(rest[paren + 1:close - 1]),
                     rest[close:], root=line.lstrip().startswith("ROOT"))


def parse_module(text: str) -> tuple[dict[str, list[Instruction]], str]:
  """{computation name: instructions}, and the entry computation's name."""
  comps, entry, current, lines = {}, None, None, []

  def flush():
    if current is not None and lines:
      inst = parse_instruction(" ".join(lines))
      if inst is not None:
        comps[current].append(inst)
    lines.clear()

  for line in text.splitlines():
    header = None if current else _HEADER.match(line)
    if header:
      current = header.group(2)
      comps[current] = []
      if header.group(1):
        entry = current
    elif current is None:
      continue
    elif line.rstrip() == "}":
      flush()
      current = None
    elif _NAME.match(line) and line.startswith("  "):
      flush()
      lines.append(line)
    else:  # a backend_config string broken over lines (Mosaic kernels' metadata)
      lines.append(line)
  if entry is None:
    raise ValueError("HLO text has no ENTRY computation")
  return comps, entry


def trip_count(inst: Instruction, comps) -> float:
  """A while loop's trip count: XLA's known_trip_count, else the bound N of a scan's condition
  `counter < N` (jax scans count from 0 by 1)."""
  m = re.search(r'"known_trip_count":\{"n":"(\d+)"', inst.attrs)
  if m:
    return float(m.group(1))
  cond = comps[inst.attr("condition")]
  root = next((i for i in cond if i.root), None)
  consts = {i.name: i.operands[0] for i in cond if i.opcode == "constant"}
  if root is not None and root.opcode == "compare" and "direction=LT" in root.attrs:
    bound = [consts[n] for n in root.operand_names if n in consts]
    if len(bound) == 1 and bound[0].lstrip("-").isdigit():
      return float(bound[0])
  raise ValueError(f"while loop {inst.name}: no known trip count; its cost cannot be weighted")


def _called(inst: Instruction, comps) -> list[tuple[str, float]]:
  """(computation, times per execution of `inst`) for the computations `inst` runs, fusions aside."""
  if inst.opcode == "while":
    n = trip_count(inst, comps)
    return [(inst.attr("body"), n), (inst.attr("condition"), n + 1)]
  if inst.opcode == "conditional":  # the most expensive branch is not known: count each once
    names = re.findall(r"%?([\w.\-]+)", (inst.attr("branch_computations") or "").strip("{}"))
    names += [inst.attr(k) for k in ("true_computation", "false_computation") if inst.attr(k)]
    return [(n, 1.0) for n in names]
  if inst.opcode in ("call", "async-start"):
    target = inst.attr("to_apply") or inst.attr("calls")
    return [(target, 1.0)] if target else []
  return []


def multipliers(comps: dict[str, list[Instruction]], entry: str) -> dict[str, float]:
  """How many times each non-fused computation runs per execution of the entry."""
  mult = collections.defaultdict(float)
  mult[entry] = 1.0
  order, seen = [entry], {entry}
  i = 0
  while i < len(order):  # computations appear callee-first in HLO text; walk from the entry
    for inst in comps[order[i]]:
      for callee, n in _called(inst, comps):
        mult[callee] += mult[order[i]] * n
        if callee not in seen:
          seen.add(callee)
          order.append(callee)
    i += 1
  return dict(mult)


def _dot_flops(inst: Instruction, types: dict[str, str]) -> float:
  out = math.prod(shape_dims(inst.type)[0][1])
  if inst.opcode == "dot":
    lhs = shape_dims(types[inst.operand_names[0]])[0][1]
    dims = [int(d) for d in re.findall(r"\d+", inst.attr("lhs_contracting_dims") or "")]
    return 2.0 * out * math.prod(lhs[d] for d in dims)
  # convolution (TPU writes most matmuls as one): output features x input features x, per
  # spatial dimension, the (output, window) pairs that land on real input, not on padding.
  lhs = shape_dims(types[inst.operand_names[0]])[0][1]
  rhs = shape_dims(types[inst.operand_names[1]])[0][1]
  outs = shape_dims(inst.type)[0][1]
  lhs_l, rhs_l, out_l = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", inst.attrs).groups()
  window = dict(re.findall(r"(\w+)=([\w_\-]+)", (re.search(r"window=\{([^}]*)\}", inst.attrs)
                                                    or re.search("()", "")).group(1)))
  field = lambda key, k, default: int(window[key].split("x")[k].split("_")[0]) if key in window else default
  taps = 1
  for c in sorted(c for c in rhs_l if c.isdigit()):  # window fields go by spatial dim number
    k = int(c)
    in_size, out_size, win = lhs[lhs_l.index(c)], outs[out_l.index(c)], rhs[rhs_l.index(c)]
    lo = int(window["pad"].split("x")[k].split("_")[0]) if "pad" in window else 0
    stride, ld, rd = (field(key, k, 1) for key in ("stride", "lhs_dilate", "rhs_dilate"))
    pos = (np.arange(out_size)[:, None] * stride + np.arange(win)[None, :] * rd - lo)
    taps *= int(((pos >= 0) & (pos % ld == 0) & (pos // ld < in_size)).sum())
  return 2.0 * outs[out_l.index("b")] * outs[out_l.index("f")] * rhs[rhs_l.index("i")] * taps


def _fusion_io_bytes(inst: Instruction, body: list[Instruction], types: dict[str, str]) -> float:
  """Bytes a fusion reads and writes: a parameter read only through slices costs the slices;
  an in-place dynamic-update-slice at the root writes its update, not the whole buffer."""
  by_name = {i.name: i for i in body}
  users = collections.defaultdict(list)
  for i in body:
    for o in i.operand_names:
      users[o].append(i)
  params = {int(i.operands[0]): i for i in body if i.opcode == "parameter"}  # parameter(N)
  root = next((i for i in body if i.root), body[-1])
  outs = [by_name[n] for n in root.operand_names] if root.opcode == "tuple" else [root]
  in_place = set()
  written = 0.0
  for out in outs:
    if out.opcode == "dynamic-update-slice":
      written += shape_bytes(types[out.operand_names[1]])
      in_place.add(out.operand_names[0])
    else:
      written += shape_bytes(out.type)
  read = 0.0
  for k, name in enumerate(inst.operand_names):
    operand = types[name]
    p = params.get(k)
    if p is None:
      read += shape_bytes(operand)
      continue
    uses = users[p.name]
    if p.name in in_place and all(u.opcode == "dynamic-update-slice" for u in uses):
      continue
    if uses and all(u.opcode in ("dynamic-slice", "slice", "gather") and u.operand_names[0] == p.name
                    for u in uses):
      read += sum(shape_bytes(u.type) for u in uses)
    else:
      read += shape_bytes(operand)
  return read + written


def _group(inst: Instruction) -> list[int]:
  """The first replica group's device (partition) ids of a collective."""
  m = re.search(r"replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", inst.attrs)
  if m:
    groups = [int(x) for x in m.group(1).split(",")]
    dims = [int(x) for x in m.group(2).split(",")]
    ids = np.arange(math.prod(dims)).reshape(dims)
    if m.group(3):
      ids = ids.transpose([int(x) for x in m.group(3).split(",")])
    return ids.reshape(groups[0], -1)[0].tolist()
  m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", inst.attrs)
  if m:  # mesh['axis_0'=2,'axis_1'=4] {'axis_1'}: devices along the named axes, the rest at 0
    axes = re.findall(r"'(\w+)'=(\d+)", m.group(1))
    named = set(re.findall(r"'(\w+)'", m.group(2)))
    ids = np.arange(math.prod(int(n) for _, n in axes)).reshape([int(n) for _, n in axes])
    return ids[tuple(slice(None) if a in named else 0 for a, _ in axes)].reshape(-1).tolist()
  m = re.search(r"replica_groups=\{\{([\d,]*)\}", inst.attrs)
  if m and m.group(1):
    return [int(x) for x in m.group(1).split(",")]
  m = re.search(r"source_target_pairs=\{\{(\d+),(\d+)\}", inst.attrs)
  if m:
    return [int(m.group(1)), int(m.group(2))]
  return []


def _wire_bytes(kind: str, operand_bytes: float, n: int) -> float:
  """Bytes one device receives (= sends) in a ring implementation of the collective."""
  if n <= 1:
    return 0.0
  return {"all-gather": (n - 1) * operand_bytes, "reduce-scatter": (n - 1) / n * operand_bytes,
          "all-reduce": 2 * (n - 1) / n * operand_bytes, "all-to-all": (n - 1) / n * operand_bytes,
          "collective-permute": operand_bytes}[kind]


@dataclasses.dataclass
class Collective:
  kind: str
  operand_bytes: float
  wire_bytes: float  # per execution, one device
  count: float       # executions per step
  group: list[int]


@dataclasses.dataclass
class HloCosts:
  flops: float = 0.0
  bytes: float = 0.0          # top-level instructions, Mosaic kernels' operands/results excluded
  kernel_bytes: float = 0.0   # Mosaic kernels' operands and results as XLA would count them
  kernel_calls: float = 0.0
  bytes_by_opcode: dict = dataclasses.field(default_factory=dict)
  bytes_by_op_name: dict = dataclasses.field(default_factory=dict)  # jax op_name metadata
  collectives: list = dataclasses.field(default_factory=list)

  @property
  def collective_wire_bytes(self) -> float:
    return sum(c.wire_bytes * c.count for c in self.collectives)


# Custom calls that only name or reinterpret buffers: no bytes move.
_FREE_CUSTOM_CALLS = ("AllocateBuffer", "ConcatBitcast", "AssumeGatherIndicesInBound")


def _is_kernel(inst: Instruction) -> bool:
  return inst.opcode == "custom-call" and "tpu_custom_call" in inst.attrs


def analyze(text: str) -> HloCosts:
  """FLOPs, HBM bytes and collectives of one device's program, loops weighted by trip count."""
  comps, entry = parse_module(text)
  mult = multipliers(comps, entry)
  types = {i.name: i.type for body in comps.values() for i in body}
  operand_bytes = lambda inst, hbm_only=True: sum(shape_bytes(types[n], hbm_only)
                                                  for n in inst.operand_names)
  costs = HloCosts()
  by_opcode, by_op_name = collections.Counter(), collections.Counter()
  fused_flops = {}

  def flops_of(comp: str) -> float:
    if comp not in fused_flops:
      total = 0.0
      for i in comps[comp]:
        if i.opcode in ("dot", "convolution"):
          total += _dot_flops(i, types)
        elif i.opcode == "fusion":
          total += flops_of(i.attr("calls"))
      fused_flops[comp] = total
    return fused_flops[comp]

  for comp, m in mult.items():
    for inst in comps.get(comp, []):
      op = inst.opcode
      if op in ("dot", "convolution"):
        costs.flops += m * _dot_flops(inst, types)
      elif op == "fusion":
        costs.flops += m * flops_of(inst.attr("calls"))
      kind = next((c for c in COLLECTIVES if op in (c, c + "-start")), None)
      if kind:
        operand = operand_bytes(inst, hbm_only=False)
        group = _group(inst)
        n = len(group) if kind != "collective-permute" else 2
        costs.collectives.append(Collective(kind, operand, _wire_bytes(kind, operand, n), m, group))
      if op in _FREE or (op == "custom-call" and re.search(
          r'custom_call_target="(%s)"' % "|".join(_FREE_CUSTOM_CALLS), inst.attrs)):
        continue
      if _is_kernel(inst):
        costs.kernel_bytes += m * (shape_bytes(inst.type) + operand_bytes(inst))
        costs.kernel_calls += m
        continue
      if op == "fusion":
        b = _fusion_io_bytes(inst, comps[inst.attr("calls")], types)
      elif op == "dynamic-update-slice":
        b = 2 * shape_bytes(types[inst.operand_names[1]])
      elif op in ("dynamic-slice", "slice"):  # reads what it writes
        b = shape_bytes(inst.type) + (shape_bytes(inst.type, hbm_only=False)
                                      if shape_bytes(types[inst.operand_names[0]]) else 0.0)
      elif op in ("copy-start", "slice-start"):
        # an asynchronous copy (mostly HBM -> on-chip prefetch): (dest, src, context) for a
        # copy, ((src), dest, context) for a slice. It reads what it writes.
        first, second = tuple_elements(inst.type)[:2]
        dest, src = (first, second) if op == "copy-start" else (second, first)
        b = shape_bytes(dest) + (shape_bytes(dest, hbm_only=False) if shape_bytes(src) else 0.0)
      elif op.endswith("-start") and inst.type.startswith("("):
        # an asynchronous collective returns (operands, results, contexts...): its results once
        b = shape_bytes(tuple_elements(inst.type)[1]) + operand_bytes(inst)
      else:
        b = shape_bytes(inst.type) + operand_bytes(inst)
      costs.bytes += m * b
      by_opcode[op] += m * b
      source = re.search(r'op_name="([^"]*)"', inst.attrs)
      by_op_name[source.group(1) if source else op] += m * b
  costs.bytes_by_opcode = dict(by_opcode.most_common())
  costs.bytes_by_op_name = dict(by_op_name.most_common())
  return costs
