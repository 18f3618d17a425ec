"""What a compiled program communicates: collective ops and their sizes, read from the text
of an XLA executable (`jax.jit(f).lower(*args).compile().as_text()`).

XLA may merge several all-reduces into one over a tuple; each array of the tuple counts.
"""

import re

import numpy as np

COLLECTIVES = ("all-reduce", "reduce-scatter", "all-gather", "all-to-all", "collective-permute",
               "collective-broadcast", "ragged-all-to-all")

# `%name = TYPE op(` where TYPE is an array type or a tuple of them; -start is the async
# form (its -done carries the same data again and is not counted).
_INSTRUCTION = re.compile(r"=\s*(?P<type>.+?)\s+(?P<op>" +
                          "|".join(re.escape(c) for c in COLLECTIVES) + r")(?:-start)?\(")
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128|f8e\w+|f4e\w+)\[([\d,]*)\]")


def _bits(dtype: str) -> int:
  if dtype in ("pred", "bf16", "c64", "c128"):
    return {"pred": 8, "bf16": 16, "c64": 64, "c128": 128}[dtype]
  if dtype.startswith(("f8", "f4")):  # f8e4m3fn, f4e2m1fn, ...
    return int(dtype[1])
  return int(dtype[1:])  # s32, u8, f16, f32, f64, ...


def array_bytes(type_text: str) -> int:
  """Bytes of every array in an HLO type: 'f32[4,16]{1,0}' or a tuple '(f32[4], bf16[2,2])'."""
  total = 0
  for dtype, dims in _ARRAY.findall(type_text):
    count = int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
    total += count * _bits(dtype) // 8
  return total


def collectives(hlo_text: str) -> list[tuple[str, int, str]]:
  """(op, bytes of its result, the instruction line) for each collective in the program.
  The result of an all-reduce is its operand; of a reduce-scatter, this device's part; of an
  all-gather, the gathered whole."""
  found = []
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.search(re.sub(r"/\*.*?\*/", "", line))  # /*index=5*/ in tuples
    if match:
      found.append((match["op"], array_bytes(match["type"]), line.strip()))
  return found


def collective_bytes(hlo_text: str) -> dict[str, int]:
  """Bytes per collective kind, e.g. {'all-reduce': 4240} (kinds absent: none)."""
  totals: dict[str, int] = {}
  for op, size, _ in collectives(hlo_text):
    totals[op] = totals.get(op, 0) + size
  return totals
