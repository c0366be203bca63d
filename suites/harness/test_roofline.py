"""roofline: FLOPs, fewest bytes and lower-bound times, checked against numbers worked out by hand."""

import math

import pytest

from fusebench import roofline
from fusebench.cases import CATALOG, AttentionCase, GraphCase, get
from fusebench.metrics import DevicePeak

# 1 TFLOP/s in every dtype and 1 GB/s: times in ms are FLOPs / 1e9 and bytes / 1e6.
UNIT = DevicePeak("unit", {"bfloat16": 1.0, "float16": 1.0, "float32": 1.0}, 1.0, "spec sheet: unit")
# B 2, Hq 4 over Hkv 2 (GQA), N 10, D 8.
SMALL = AttentionCase("small", "t", batch=2, heads=4, kv_heads=2, seq_q=10, seq_k=10, head_dim=8)


def test_attention_bytes_count_each_tensor_once():
    q_like = 2 * 10 * 4 * 8 * 2  # Q, O, dO, dQ in float16: 1280 B
    kv_like = 2 * 10 * 2 * 8 * 2  # K, V, dK, dV over the 2 key/value heads: 640 B
    lse = 2 * 10 * 4 * 4  # float32 log-sum-exp per query row and head: 320 B
    assert roofline.attention_bytes(SMALL, "forward", "float16") == 2 * q_like + 2 * kv_like + lse == 4160
    # backward reads Q, O, dO and writes dQ (four Q-shaped tensors), reads K, V and writes dK, dV, reads LSE
    assert roofline.attention_bytes(SMALL, "backward", "float16") == 4 * q_like + 4 * kv_like + lse == 8000
    assert roofline.attention_bytes(SMALL, "forward+backward", "float16") == 4160 + 8000
    assert roofline.attention_bytes(SMALL, "forward", "float32") == 2 * 4160 - lse


def test_a_small_attention_case_is_memory_bound():
    limit = roofline.bound(SMALL, "forward", "float16", UNIT)
    assert limit.flops == 4 * 4 * (2 * 10 * 10) * 8  # 4 Hq D per (query, key) pair: 25,600
    assert limit.compute_ms == pytest.approx(25_600 / 1e9)
    assert limit.memory_ms == pytest.approx(4160 / 1e6)
    assert limit.ms == limit.memory_ms and limit.bound_by == "memory"


def test_bert_base_512_on_h100_and_h200():
    case = get("bert-base-512")  # B 8, H 12, N 512, D 64
    flops = 4 * 8 * 12 * 512 * 512 * 64  # 6.44 GFLOP
    moved = 4 * (8 * 512 * 12 * 64 * 2) + 8 * 512 * 12 * 4  # Q, K, V, O in bf16 + LSE: 25.4 MB
    h100 = roofline.bound(case, "forward", "bfloat16", roofline.peak_named("H100 SXM5"))
    assert (h100.flops, h100.bytes) == (flops, moved)
    assert h100.ms == pytest.approx(moved / 3350e9 * 1e3)  # 7.57 us: the bandwidth binds on H100 ...
    assert h100.bound_by == "memory"
    h200 = roofline.bound(case, "forward", "bfloat16", roofline.peak_named("H200 SXM"))
    assert h200.ms == pytest.approx(flops / 989.4e12 * 1e3)  # ... and the tensor cores on H200 (6.51 us)
    assert h200.bound_by == "compute"


def test_causal_halves_the_flops_not_the_bytes():
    causal = AttentionCase("c", "t", batch=2, heads=4, kv_heads=2, seq_q=10, seq_k=10, head_dim=8, causal=True)
    assert roofline.work(causal, "forward", "float16") == (25_600 / 2, 4160)


def test_graph_cases_use_the_catalog_byte_model_and_the_float32_rate():
    case = GraphCase("g", "t", "gcn", "erdos_renyi", num_nodes=10, avg_degree=3.0, features=4)  # 30 edges
    # GCN aggregates over A + I: 30 edges + 10 self-loops = 40 gathered rows of 4 bf16, 40 int64 column
    # indices, 11 row pointers, 10 output rows, 40 weights
    moved = 40 * 4 * 2 + 40 * 8 + 11 * 8 + 10 * 4 * 2 + 40 * 2
    assert roofline.work(case, "forward", "bfloat16") == (2 * 40 * 4, moved)
    assert roofline.work(case, "forward+backward", "bfloat16") == (4 * 40 * 4, 2 * moved)
    no_fp32 = DevicePeak("x", {"bfloat16": 1.0}, 1.0, "spec sheet: x")
    with pytest.raises(ValueError, match="has no float32 peak"):
        roofline.bound(case, "forward", "bfloat16", no_fp32)
    mean = GraphCase("m", "t", "mean", "erdos_renyi", num_nodes=10, avg_degree=3.0, features=4)
    assert roofline.graph_flops(mean, "forward") == 30 * 4 + 10 * 4


def test_the_table_covers_every_case_mode_and_device():
    bounds = roofline.table()
    op_level = [name for name, sizes in CATALOG.items() if sizes["gpu"].suite != "models"]  # no roofline for models
    assert len(bounds) == len(op_level) * 3 * len(roofline.DEVICES)
    assert all(b.ms > 0 and math.isfinite(b.ms) for b in bounds)
    text = roofline.format_table(roofline.table(modes=("forward",), devices=("H100 SXM5", "H200 SXM")))
    assert "H100 SXM5 us" in text and "H200 SXM us" in text and "gpt-gqa-8k" in text


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="mode must be one of"):
        roofline.attention_bytes(SMALL, "sideways", "float16")
    with pytest.raises(ValueError, match="dtype must be one of"):
        roofline.attention_bytes(SMALL, "forward", "int8")
    with pytest.raises(ValueError, match="unknown device 'B200'"):
        roofline.peak_named("B200")
    with pytest.raises(ValueError, match="vit-b16-224-model: a whole model has no FLOP or byte model"):
        roofline.work(get("vit-b16-224-model"), "forward", "bfloat16")


def test_gcn_bytes_count_the_self_loops_the_runner_aggregates():
    # The runner's GB/s uses the workload's real edge count (self-loops added as GCNConv does); the
    # roofline must count the same edges, or the two disagree by the loops' share (19-34% on small graphs).
    from fusebench.providers import make_workload

    for name in ("gcn/cora-like", "gcn/er-degree-2"):
        case = get(name, "cpu")
        edges = int(make_workload(case).context["edge_index"].shape[1])
        runner_bytes = case.bytes_moved("forward", value_bytes=4, num_edges=edges)
        _, roofline_bytes = roofline.work(case, "forward", "float32")
        # 3%: the power-law generator's graph already holds a few loops or merged duplicates (cora-like: 1.7%)
        assert roofline_bytes == pytest.approx(runner_bytes, rel=0.03), name
        without_loops = case.bytes_moved("forward", value_bytes=4, num_edges=case.num_edges)
        assert without_loops < 0.85 * runner_bytes  # what the roofline counted before: 19-34% short


def test_gat_backward_moves_more_than_its_forward():
    case = GraphCase("a", "t", "gat", "erdos_renyi", num_nodes=10, avg_degree=3.0, features=8, heads=2)
    e, n, f, h, b = 30, 10, 8, 2, 2
    indices = e * 8 + (n + 1) * 8
    forward = e * f * b + indices + n * f * b + e * h * b + n * h * b
    backward = 2 * e * f * b + 2 * e * h * b + indices + n * f * b + 2 * n * h * b
    assert roofline.work(case, "forward", "bfloat16")[1] == forward
    assert roofline.work(case, "backward", "bfloat16")[1] == backward > forward
    assert roofline.work(case, "forward+backward", "bfloat16")[1] == forward + backward


# torch.cuda.get_device_name() of each table GPU, and of the look-alikes that must not borrow its numbers.
REAL_NAMES = {
    "NVIDIA H100 PCIe": "H100 PCIe",
    "NVIDIA H100 80GB HBM3": "H100 SXM5",
    "NVIDIA H100 NVL": "H100 NVL",
    "NVIDIA H200": "H200 SXM",
    "NVIDIA H200 NVL": "H200 NVL",
    "NVIDIA A100-SXM4-40GB": "A100 40GB",
    "NVIDIA A100-PCIE-40GB": "A100 40GB",
    "NVIDIA A100-SXM4-80GB": "A100 80GB SXM",
    "NVIDIA A100 80GB PCIe": "A100 80GB PCIe",
    "NVIDIA L4": "L4",
    "NVIDIA GH200 480GB": "GH200 (96GB HBM3)",  # Grace Hopper: its own row, not the H200's
    "NVIDIA GH200 144G HBM3e": "GH200 (144GB HBM3e)",
    "NVIDIA GH200": None,  # a name the table does not know whole
    "NVIDIA L40S": None,
    "NVIDIA GeForce RTX 4090": None,
    "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz": None,
}


@pytest.mark.parametrize("name", REAL_NAMES)
def test_real_device_names_get_their_own_row_and_look_alikes_none(name):
    from fusebench.metrics import spec_peak

    peak = spec_peak(name)
    assert (roofline.label(peak) if peak else None) == REAL_NAMES[name]


def test_look_alikes_differ_where_their_datasheets_do():
    from fusebench.metrics import spec_peak

    assert spec_peak("NVIDIA A100 80GB PCIe").bandwidth_gbps < spec_peak("NVIDIA A100-SXM4-80GB").bandwidth_gbps
    assert spec_peak("NVIDIA H200 NVL").tflops["bfloat16"] < spec_peak("NVIDIA H200").tflops["bfloat16"]
    assert spec_peak("NVIDIA H100 NVL").bandwidth_gbps > spec_peak("NVIDIA H100 80GB HBM3").bandwidth_gbps
    assert spec_peak("NVIDIA GH200 480GB").bandwidth_gbps < spec_peak("NVIDIA H200").bandwidth_gbps
