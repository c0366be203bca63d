"""fusebench/specializations.py: the specialization a launch compiles, by Triton's own rule, and the report
rows it decides (fusebench/inspect.py's ``specialized_specs``).

These record launches in-process under the interpreter (the test session's TRITON_INTERPRET=1): the
kernels are replaced by the recorder, so nothing executes and the sizes cost nothing.
"""

import pytest
import torch

from fusebench.inspect import specialized_specs
from fusebench.specializations import launch_specialization, recording
from kernels import spmm
from kernels._csr import combine_kernel
from kernels.spmm import csr_aggregate
from reference.graph_generators import power_law


def _combine_launch(part, out, num_features: int, num_edges: int):
    index = torch.zeros(4, dtype=torch.int64)
    return launch_specialization(combine_kernel, (index, index, index, part, index, out, index, num_features,
                                                        num_edges), dict(IS_MAX=False, BLOCK_S=16, BLOCK_F=128))


def test_the_launch_rule_is_tritons_documented_one():
    """Integers and pointers divisible by 16 are marked divisible, integers equal to 1 become constants,
    a pointer one float16 element into a buffer (2 bytes) and an integer of 602 are neither."""
    part = torch.empty(64, dtype=torch.float32)
    out = torch.empty(65, dtype=torch.float16)
    aligned = _combine_launch(part, out, num_features=128, num_edges=32)
    assert {"part_ptr", "out_ptr", "num_features", "num_edges"} <= set(aligned.divisible)
    assert aligned.ones == () and aligned.signature["num_features"] == "i32"
    ragged = _combine_launch(part[1:], out[1:], num_features=602, num_edges=1)
    assert not {"part_ptr", "out_ptr", "num_features", "num_edges"} & set(ragged.divisible)
    assert ragged.ones == ("num_edges",)
    assert ragged.signature["num_edges"] == "constexpr" and ragged.constexprs["num_edges"] == 1
    eight_floats = _combine_launch(part[4:], out[8:], num_features=48, num_edges=17)  # 16 bytes in: still aligned
    assert {"part_ptr", "out_ptr", "num_features"} <= set(eight_floats.divisible)
    assert "num_edges" not in eight_floats.divisible
    assert aligned.signature["out_ptr"] == "*fp16" and aligned.constexprs["BLOCK_F"] == 128


def _segment_sum_launches(widths, index_dtype=torch.int64):
    graph = power_law(30, 4.0, seed=3, index_dtype=index_dtype)
    csr, csc = graph.csr(), graph.csc()
    launches = []
    for width in widths:
        x = torch.randn(graph.num_nodes, width, dtype=torch.float16)
        with recording(launches, f"F{width}"):
            csr_aggregate(x, csr, csc, reduce="sum")
    return launches


def test_an_aligned_and_a_ragged_launch_are_separate_rows_labelled_with_their_cases():
    launches = _segment_sum_launches([128, 256, 602])
    rows, _ = specialized_specs(spmm.compile_specs(), launches)
    segment = [r for r in rows if r.kernel == "spmm.segment_sum" and r.config == "fp16 i64 E16 F128 w4"]
    assert len(segment) == 2
    by_case = {r.cases: r for r in segment}
    assert set(by_case) == {"F128, F256", "F602"}  # one row per specialization, its cases joined
    aligned, ragged = by_case["F128, F256"], by_case["F602"]
    assert {"num_features", "stride_xn", "x_ptr", "out_ptr"} <= set(aligned.divisible)
    assert not {"num_features", "stride_xn"} & set(ragged.divisible)
    assert aligned.specialization != ragged.specialization and "num_features" in ragged.specialization


def test_a_configuration_serves_only_launches_of_its_dtype_and_tiles():
    launches = _segment_sum_launches([128], index_dtype=torch.int32)
    rows, unserved = specialized_specs(spmm.compile_specs(), launches)
    assert {(r.kernel, r.config) for r in rows} == {("spmm.segment_sum", "fp16 i32 E16 F128 w4")}
    assert len(unserved) == len(spmm.compile_specs()) - 1


@pytest.mark.parametrize("width", [1, 602])
def test_an_integer_equal_to_one_is_compiled_as_a_constant(width):
    launch, = [x for x in _segment_sum_launches([width]) if x.function.endswith(".segment_kernel")]
    rows, _ = specialized_specs(spmm.compile_specs(), [launch])
    row, = rows
    assert ("num_features" in row.ones) == (width == 1)
    source = row.source()
    assert (source.constants.get((list(row.signature).index("num_features"),)) == 1) == (width == 1)


@pytest.mark.parametrize("name", ["clip-text-77", "gcn/cora-like"])
def test_the_recording_fills_inputs_with_ones_and_records_the_same_launches(name):
    """record_catalog does not draw the catalog's random inputs (most of its time at GPU sizes): what a launch
    compiles depends on dtypes, shapes, strides, alignment and integers, never on values."""
    from fusebench import cases
    from fusebench.specializations import _inputs_not_drawn, _run_case

    case = cases.get(name, "cpu")
    drawn, filled = [], []
    for dtype in (torch.float16, torch.float32):
        _run_case(case, dtype, drawn, name)
        with _inputs_not_drawn():
            _run_case(case, dtype, filled, name)
    assert drawn and filled == drawn


def _attention_launches(**flags):
    from kernels.attention import attention

    q, k, v = (torch.randn(1, 2, 40, 64, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    launches = []
    with recording(launches, " ".join(sorted(name for name, on in flags.items() if on)) or "plain"):
        attention(q, k, v, **flags).sum().backward()
    return launches


def test_attention_rows_take_the_launches_flags_and_the_tma_path_is_its_own_row():
    """A causal and a plain launch of one configuration are two rows compiled with their own IS_CAUSAL; the
    forward's TMA variant serves only launches that take the TMA path (as an sm_90 GPU decides)."""
    from fusebench.specializations import _as_on_hopper
    from kernels import attention as ka

    pointer = _attention_launches(is_causal=False) + _attention_launches(is_causal=True)
    with _as_on_hopper():
        tma = [x for x in _attention_launches(is_causal=True) if x.constexprs.get("USE_TMA")]
    assert tma and not any(x.constexprs.get("USE_TMA") for x in pointer)
    rows, _ = specialized_specs(ka.compile_specs(), pointer + tma)
    config = "bf16 D64 M64 N64 w4 s3"
    forward = [r for r in rows if r.kernel == "attention.forward" and r.config.startswith(config)]
    by_path = {(r.config.endswith(" tma"), r.constexprs["IS_CAUSAL"]): r for r in forward}
    assert set(by_path) == {(False, False), (False, True), (True, True)}, sorted(by_path)
    assert by_path[(True, True)].cases == "is_causal" and by_path[(False, False)].cases == "plain"
    assert "IS_CAUSAL" in by_path[(False, True)].specialization
    assert by_path[(True, True)].constexprs["USE_TMA"] and by_path[(True, True)].targets == (90,)
    backward = {r.constexprs["IS_CAUSAL"] for r in rows
                if r.kernel == "attention.dq" and r.config == "bf16 D64 M64 N64 w8 s2"}
    assert backward == {False, True}


def test_an_unknown_launch_set_is_refused_by_name():
    from fusebench.cli import build_parser
    from fusebench.specializations import catalog_launches

    with pytest.raises(ValueError, match="which must be one of"):
        catalog_launches("cpu-only")
    assert build_parser().parse_args(["inspect", "--launches", "gpu"]).launches == "gpu"
    assert build_parser().parse_args(["inspect"]).launches == "all"
