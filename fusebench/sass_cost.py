"""A static cost model of a kernel's main loop, read from its SASS (``nvdisasm -c`` output).

The main loop is found from the control flow: every backward branch (a ``BRA`` to a label at or before
it) closes a loop spanning the label to the branch. The main loop is, among the innermost loops
that do work (an outer loop holds its inner loops' instructions too: dK/dV's loop over query heads holds
its three loops over query blocks), the one holding the most tensor-core instructions (``HGMMA``/``HMMA``),
then the most global loads (graph kernels have no tensor cores), then the shortest: of a kernel's
unmasked interior loop and masked boundary loops, the cheaper interior loop, the one long sequences
spend their time in, is reported.

What is reported for it:

* ``loop_instructions``: the instructions of one iteration (one tile of ``tile_elements``: BLOCK_M x
  BLOCK_N scores for attention, BLOCK_E x BLOCK_F (or BLOCK_C) edge-feature elements for graph kernels);
* ``per_element``: thread-instructions per tile element, ``loop_instructions * 32 * num_warps / tile``;
* ``issue_clocks``: the clocks an SM needs to issue one iteration, ``loop_instructions * num_warps /
  ISSUE_PER_CLOCK``, scaled to a 128 x 128 tile so that configurations compare;
* ``tensor_clocks``: the clocks the SM's tensor cores need for the same 128 x 128 tile, from the
  multiply-adds the loop's HGMMA/HMMA instructions encode in their shapes (``HGMMA.64x128x16`` is one
  warpgroup's 64*128*16; ``HMMA.16816`` one warp's 16*8*16) at ``TENSOR_FMA_PER_CLOCK``;
* ``mix``: the loop's instructions by kind (see ``MIX``).

When issue clocks exceed tensor clocks the loop cannot keep the tensor cores busy however well it
overlaps: it is issue-bound. The model ignores latencies, dual issue and memory: a floor, not a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Warp-instructions an SM issues per clock: four schedulers (SM sub-partitions), one each per clock, on
# every architecture since Volta (NVIDIA's Volta, Ampere and Hopper architecture whitepapers).
ISSUE_PER_CLOCK = 4
# Dense 16-bit tensor-core multiply-adds per clock per SM, the whitepapers' peak divided by SMs and boost
# clock: A100 312 TFLOP/s / (108 SMs * 1.41 GHz) / 2 = 1024; H100 SXM 989 TFLOP/s / (132 * 1.83 GHz) / 2 =
# 2048. TF32 runs at half that rate. Other targets have no figure here: their tensor clocks are 0.
TENSOR_FMA_PER_CLOCK = {80: 1024, 90: 2048}
REFERENCE_TILE = 128 * 128  # issue and tensor clocks are scaled to one 128 x 128 tile

# Instruction kinds of the mix: name -> opcode prefixes (the opcode's first dotted field matched exactly).
MIX = {
    "hgmma": ("HGMMA",),  # wgmma, sm_90
    "hmma": ("HMMA",),  # mma.sync
    "tma": ("UTMALDG",),
    "cp_async": ("LDGSTS",),
    "mufu": ("MUFU",),
    "ffma": ("FFMA",),
    "fmul": ("FMUL",),
    "fadd": ("FADD",),
    "fsel": ("FSEL",),
    "barrier": ("BAR", "SYNCS", "DEPBAR", "WARPGROUP", "WARPSYNC"),
    "global_load": ("LDG", "LDGSTS", "UTMALDG"),
}

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Za-z0-9_.]*)([^;]*);")
_LABEL = re.compile(r"^\s*(\.L\w+):")
_TARGET = re.compile(r"`\((\.L\w+)\)")
_HGMMA_SHAPE = re.compile(r"^HGMMA\.(\d+)x(\d+)x(\d+)")
_HMMA_SHAPE = re.compile(r"^HMMA\.(\d\d)(\d)(\d+)")


@dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str  # with its modifiers, e.g. "HGMMA.64x128x16.F32.BF16"
    target: str = ""  # the label a branch jumps to


@dataclass(frozen=True)
class Loop:
    start: int  # address of the first instruction (the branch target)
    end: int  # address of the backward branch
    instructions: tuple[Instruction, ...]

    def count(self, kind: str) -> int:
        return sum(_kind_of(i.opcode, kind) for i in self.instructions)

    def tensor_core_instructions(self) -> int:
        return self.count("hgmma") + self.count("hmma")


def _kind_of(opcode: str, kind: str) -> bool:
    return opcode.split(".")[0] in MIX[kind]


def parse(sass: str) -> tuple[list[Instruction], dict[str, int]]:
    """The instructions of ``nvdisasm -c`` text and the address of every label."""
    instructions, labels, pending = [], {}, []
    for line in sass.splitlines():
        label = _LABEL.match(line)
        if label:
            pending.append(label[1])
            continue
        match = _LINE.search(line)
        if not match:
            continue
        address = int(match[1], 16)
        for name in pending:
            labels[name] = address
        pending = []
        target = _TARGET.search(match[4])
        instructions.append(Instruction(address, match[3], target[1] if target and match[3].startswith("BRA") else ""))
    return instructions, labels


def loops(sass: str) -> list[Loop]:
    """Every loop closed by a backward branch; branches back to one label make one loop (to the last of them).

    A span holding an ``EXIT`` is no loop: it is the jump back from an out-of-line slow path placed after
    the kernel's end (the mbarrier wait of a TMA load spins there and returns into the loop).
    """
    instructions, labels = parse(sass)
    ends: dict[int, int] = {}
    for i in instructions:
        if i.target and i.target in labels and labels[i.target] <= i.address:
            start = labels[i.target]
            ends[start] = max(ends.get(start, i.address), i.address)
    spans = [tuple(i for i in instructions if start <= i.address <= end) for start, end in sorted(ends.items())]
    return [Loop(body[0].address, body[-1].address, body) for body in spans
            if body and not any(i.opcode.startswith("EXIT") for i in body)]


def main_loop(sass: str) -> Loop | None:
    """The loop doing the work (the module docstring's rule); None when no loop holds tensor cores or loads."""
    working = [loop for loop in loops(sass) if loop.tensor_core_instructions() or loop.count("global_load")]
    innermost = [loop for loop in working
                 if not any(other is not loop and loop.start <= other.start and other.end <= loop.end
                            for other in working)]
    if not innermost:
        return None
    return max(innermost, key=lambda loop: (loop.tensor_core_instructions(), loop.count("global_load"),
                                            -len(loop.instructions)))


def tensor_fmas(instructions, num_warps: int) -> int:
    """Multiply-adds the tensor-core instructions perform for the whole block (all its warps)."""
    total = 0
    for i in instructions:
        if shape := _HGMMA_SHAPE.match(i.opcode):  # one instruction per warpgroup of 4 warps
            m, n, k = map(int, shape.groups())
            total += m * n * k * max(num_warps // 4, 1)
        elif shape := _HMMA_SHAPE.match(i.opcode):  # one instruction per warp
            m, n, k = map(int, shape.groups())
            total += m * n * k * num_warps
    return total


def tile_elements(constexprs: dict) -> int:
    """Elements one main-loop iteration covers: scores (BLOCK_M x BLOCK_N) or edge-features (BLOCK_E x
    BLOCK_F or BLOCK_C); 0 when the kernel names no such tile."""
    for rows, columns in (("BLOCK_M", "BLOCK_N"), ("BLOCK_E", "BLOCK_F"), ("BLOCK_E", "BLOCK_C")):
        if rows in constexprs and columns in constexprs:
            return int(constexprs[rows]) * int(constexprs[columns])
    return 0


@dataclass
class LoopCost:
    loop_instructions: int = 0
    per_element: float = 0.0
    issue_clocks: float = 0.0  # per 128 x 128 tile
    tensor_clocks: float = 0.0  # per 128 x 128 tile; 0 without tensor cores or a throughput figure
    mix: dict = field(default_factory=dict)


def loop_cost(sass: str, num_warps: int, constexprs: dict, capability: int) -> LoopCost:
    """The cost model of the module docstring for one compiled kernel (all zero when no main loop is found)."""
    loop = main_loop(sass)
    tile = tile_elements(constexprs)
    if loop is None or tile == 0:
        return LoopCost()
    n = len(loop.instructions)
    scale = REFERENCE_TILE / tile
    fma_rate = TENSOR_FMA_PER_CLOCK.get(capability, 0)
    tf32 = any(".TF32" in i.opcode for i in loop.instructions)
    tensor = tensor_fmas(loop.instructions, num_warps) / (fma_rate / (2 if tf32 else 1)) * scale if fma_rate else 0.0
    return LoopCost(loop_instructions=n, per_element=n * 32 * num_warps / tile,
                    issue_clocks=n * num_warps / ISSUE_PER_CLOCK * scale, tensor_clocks=tensor,
                    mix={kind: loop.count(kind) for kind in MIX})


def format_cost(reports) -> str:
    """The cost table of ``fusebench inspect --cost``: one row per compiled (kernel, config, target)."""
    header = ("kernel", "config", "target", "regs", "spill B", "HGMMA", "HMMA", "TMA", "cp.async", "loop",
              "per elem", "issue clk", "TC clk", "MUFU", "FFMA", "FMUL", "FADD", "FSEL", "barriers")
    rows = []
    for r in reports:
        if not r.compiled:
            rows.append((r.kernel, r.config, r.target, *["-"] * (len(header) - 4), f"FAILED: {r.error[:40]}"))
            continue
        mix = r.mix or dict.fromkeys(MIX, 0)
        rows.append((r.kernel, r.config, r.target, r.registers, r.spill_store_bytes + r.spill_load_bytes,
                     mix["hgmma"], mix["hmma"], mix["tma"], mix["cp_async"], r.loop_instructions,
                     f"{r.per_element:.1f}", f"{r.issue_clocks:.0f}", f"{r.tensor_clocks:.0f}", mix["mufu"],
                     mix["ffma"], mix["fmul"], mix["fadd"], mix["fsel"], mix["barrier"]))
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    notes = ("loop: instructions of one main-loop iteration; per elem: thread-instructions per score (attention) or "
             "edge-feature (graph) element; issue clk / TC clk: clocks to issue one iteration / for the tensor "
             "cores to do its products, both per 128x128 tile (fusebench/sass_cost.py states the throughputs)")
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows), "", notes])
