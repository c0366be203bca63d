"""The SASS cost model (fusebench/sass_cost.py) on small hand-written SASS in ``nvdisasm -c``'s format.

Each snippet is shaped like what Triton's kernels compile to: nested loops (dK/dV's loop over query heads
around its loop over query blocks), two sibling key loops (interior and diagonal), and the out-of-line
slow path of an mbarrier wait placed after EXIT that branches back into the loop.
"""

import pytest

from fusebench.sass_cost import (
    ISSUE_PER_CLOCK,
    REFERENCE_TILE,
    TENSOR_FMA_PER_CLOCK,
    loop_cost,
    loops,
    main_loop,
    tensor_fmas,
    tile_elements,
)


def _sass(*lines: str) -> str:
    """Number the instructions 16 bytes apart as nvdisasm does; lines ending in ':' are labels."""
    out, address = [], 0
    for line in lines:
        if line.endswith(":"):
            out.append(line)
        else:
            out.append(f"        /*{address:04x}*/                   {line} ;")
            address += 16
    return "\n".join(out)


NESTED = _sass(
    "S2R R0, SR_TID.X",
    ".L_x_outer:",
    "IMAD R1, R0, R2, R3",
    ".L_x_inner:",
    "LDG.E.128 R4, desc[UR4][R2.64]",
    "HMMA.16816.F32.BF16 R8, R4, R6, R8",
    "HMMA.16816.F32.BF16 R12, R4, R6, R12",
    "FFMA R1, R8, R9, R10",
    "@P0 BRA `(.L_x_inner)",
    "IADD3 R0, R0, 0x1, RZ",
    "@P1 BRA `(.L_x_outer)",
    "EXIT",
    ".L_x_trap:",
    "BRA `(.L_x_trap)",
)


def test_nested_loops_report_the_inner_loop_that_holds_the_tensor_cores():
    found = loops(NESTED)
    assert [len(loop.instructions) for loop in found] == [8, 5, 1]  # outer (with the inner), inner, the trap
    main = main_loop(NESTED)
    assert len(main.instructions) == 5 and main.count("hmma") == 2 and main.count("ffma") == 1


def test_an_outer_loop_around_two_working_loops_is_not_the_main_loop():
    heads_around_blocks = _sass(
        ".L_x_heads:",
        ".L_x_masked:",
        "HMMA.16816.F32.BF16 R8, R4, R6, R8",
        "FSEL R8, R8, -INF, P1",
        "@P0 BRA `(.L_x_masked)",
        ".L_x_interior:",
        "HMMA.16816.F32.BF16 R8, R4, R6, R8",
        "@P0 BRA `(.L_x_interior)",
        "@P1 BRA `(.L_x_heads)",
        "EXIT",
    )
    main = main_loop(heads_around_blocks)  # the outer loop holds two HMMA, each inner one one
    assert main.count("hmma") == 1 and len(main.instructions) == 2 and main.count("fsel") == 0


SIBLINGS_AND_SLOW_PATH = _sass(
    ".L_x_interior:",
    "UTMALDG.2D [UR8], [UR4]",
    "@!P0 BRA `(.L_x_wait)",
    ".L_x_back:",
    "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR28], RZ, !UPT",
    "HGMMA.64x128x16.F32.BF16 R24, R120, gdesc[UR24].tnspB, R24",
    "FFMA R3, R24, R5, -R6",
    "MUFU.EX2 R3, R3",
    "@P2 BRA `(.L_x_interior)",
    ".L_x_diagonal:",
    "UTMALDG.2D [UR8], [UR4]",
    "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR28], RZ, !UPT",
    "HGMMA.64x128x16.F32.BF16 R24, R120, gdesc[UR24].tnspB, R24",
    "ISETP.GT.AND P1, PT, R7, R8, PT",
    "FSEL R24, R24, -1e6, !P1",
    "FFMA R3, R24, R5, -R6",
    "MUFU.EX2 R3, R3",
    "@P3 BRA `(.L_x_diagonal)",
    "EXIT",
    ".L_x_wait:",
    "SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4+0x10], R0",
    "@!P0 BRA `(.L_x_wait)",
    "BRA `(.L_x_back)",
)


def test_the_jump_back_from_an_out_of_line_wait_is_no_loop_and_the_interior_loop_is_reported():
    starts = [loop.start for loop in loops(SIBLINGS_AND_SLOW_PATH)]
    assert starts == [0x00, 0x70, 0x100]  # interior, diagonal, the wait's spin; not the span of BRA .L_x_back
    main = main_loop(SIBLINGS_AND_SLOW_PATH)
    assert main.start == 0 and len(main.instructions) == 7  # the cheaper of two loops with equal work
    assert main.count("hgmma") == 2 and main.count("tma") == 1 and main.count("fsel") == 0


def test_cost_figures_follow_their_definitions():
    warps, capability = 8, 90
    cost = loop_cost(SIBLINGS_AND_SLOW_PATH, warps, {"BLOCK_M": 128, "BLOCK_N": 128, "HEAD_DIM": 64}, capability)
    assert cost.loop_instructions == 7
    assert cost.per_element == pytest.approx(7 * 32 * warps / (128 * 128))
    assert cost.issue_clocks == pytest.approx(7 * warps / ISSUE_PER_CLOCK)
    # two HGMMA 64x128x16 per warpgroup, two warpgroups in 8 warps
    assert cost.tensor_clocks == pytest.approx(2 * 64 * 128 * 16 * 2 / TENSOR_FMA_PER_CLOCK[capability])
    assert cost.mix["mufu"] == 1 and cost.mix["ffma"] == 1 and cost.mix["hmma"] == 0


def test_a_smaller_tile_is_scaled_to_the_reference_tile():
    cost = loop_cost(NESTED, 4, {"BLOCK_M": 64, "BLOCK_N": 32}, 80)
    scale = REFERENCE_TILE / (64 * 32)
    assert cost.issue_clocks == pytest.approx(5 * 4 / ISSUE_PER_CLOCK * scale)
    assert cost.tensor_clocks == pytest.approx(2 * 16 * 8 * 16 * 4 / TENSOR_FMA_PER_CLOCK[80] * scale)


def test_graph_kernels_count_edge_feature_elements_and_loops_without_tensor_cores():
    gather = _sass(".L_x_edges:", "LDG.E.64 R4, desc[UR4][R2.64]", "FFMA R8, R4, R5, R8", "@P0 BRA `(.L_x_edges)",
                   "EXIT")
    assert tile_elements({"BLOCK_E": 32, "BLOCK_F": 64}) == 32 * 64
    assert tile_elements({"BLOCK_E": 16, "BLOCK_C": 32}) == 16 * 32
    cost = loop_cost(gather, 4, {"BLOCK_E": 32, "BLOCK_F": 64}, 90)
    assert cost.loop_instructions == 3 and cost.tensor_clocks == 0
    assert cost.per_element == pytest.approx(3 * 128 / (32 * 64))


def test_no_loop_or_no_tile_gives_an_empty_cost():
    straight = _sass("LDG.E R4, desc[UR4][R2.64]", "HMMA.16816.F32.BF16 R8, R4, R6, R8", "EXIT")
    assert main_loop(straight) is None
    assert loop_cost(straight, 4, {"BLOCK_M": 16, "BLOCK_N": 16}, 90).loop_instructions == 0
    assert loop_cost(NESTED, 4, {"BLOCK_K": 16}, 90).loop_instructions == 0


def test_tf32_products_count_at_half_the_16_bit_rate():
    tf32 = _sass(".L_x_0:", "HMMA.1684.F32.TF32 R8, R4, R6, R8", "@P0 BRA `(.L_x_0)", "EXIT")
    assert tensor_fmas(main_loop(tf32).instructions, 4) == 16 * 8 * 4 * 4
    cost = loop_cost(tf32, 4, {"BLOCK_M": 128, "BLOCK_N": 128}, 80)
    assert cost.tensor_clocks == pytest.approx(16 * 8 * 4 * 4 / (TENSOR_FMA_PER_CLOCK[80] / 2))
