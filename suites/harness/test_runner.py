"""The benchmark runner on the CPU: agreement before speed, rows stored, no interpreter time ever."""

import math

import pytest
import torch

from fusebench import cases, runner
from fusebench.device import identity
from fusebench.providers import Provider
from fusebench.store import ResultsStore


def test_catalog_cases_have_deterministic_nonzero_inputs_and_the_issue_flop_model():
    case = cases.get("gpt-gqa-8k")
    assert (case.heads, case.kv_heads, case.seq_q, case.head_dim, case.causal) == (32, 8, 8192, 128, True)
    assert case.flops("forward") == 4 * 32 * 8192 * 8192 * 128 / 2  # halved: causal
    assert case.flops("backward") == 2.5 * case.flops("forward")
    assert case.flops("forward+backward") == 3.5 * case.flops("forward")
    small = cases.for_device("bert-base-512", "cpu")
    first, second = small.inputs(), small.inputs()
    assert small.size == "cpu" and torch.equal(first["q"], second["q"])
    assert all((t != 0).all() for t in first.values())
    varlen = cases.get("varlen-mixed", "cpu").inputs()
    assert varlen["cu_seqlens"].tolist() == [0, 17, 81, 178, 306, 307]
    with pytest.raises(ValueError, match="unknown case 'bert-base-7'"):
        cases.get("bert-base-7")
    with pytest.raises(ValueError, match="mode must be one of"):
        case.flops("sideways")


def test_graph_byte_model_counts_gathers_indices_and_output():
    case = cases.get("gcn/cora-like", "cpu")
    e, n, f = case.num_edges + case.num_nodes, case.num_nodes, case.features  # GCN aggregates over A + I
    expected = e * f * 4 + e * 8 + (n + 1) * 8 + n * f * 4 + e * 4  # + gcn's per-edge weight
    assert case.bytes_moved("forward", value_bytes=4) == expected
    assert case.bytes_moved("forward+backward", value_bytes=4) == 2 * expected


def test_run_stores_rows_whose_times_carry_agreement(tmp_path):
    store = ResultsStore(tmp_path)
    report = runner.run(suites=("attention",), case_names=["bert-base-128"], provider_names=["reference", "sdpa-math"],
                        modes=("forward", "backward"), ident=identity("cpu"), store=store)
    assert not report.failed
    measured = [r for r in report.results if r.status == "measured"]
    assert {(r.provider, r.mode) for r in measured} == {(p, m) for p in ("reference", "sdpa-math")
                                                        for m in ("forward", "backward")}
    assert all(r.agrees and 0 <= r.agreement <= 1 and r.time_ms.p20 <= r.time_ms.p50 <= r.time_ms.p80
               for r in measured)
    frame = store.read(strict=True).frame
    assert set(frame["metric"]) == {"time", "tflops", "memory", "agreement"}  # no % of peak on a CPU
    assert frame["agreement"].notna().all() and (frame["commit"] == report.identity.commit).all()
    assert (frame.loc[frame["metric"] == "memory", "p50"] > 0).all()
    text = runner.format_summary(report)
    assert "bert-base-128" in text and "agrees" in text and "blocked_autorange" in text


def test_an_interpreted_triton_provider_gets_agreement_and_never_a_time(monkeypatch, tmp_path):
    # A stand-in "triton" provider built on the reference, so this test runs before kernels/ lands: what is
    # checked is the runner's handling of any provider flagged triton on a CPU under TRITON_INTERPRET=1.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    reference = runner.providers("attention")[0]
    fake = Provider("triton", "attention", "stand-in", reference.build, triton=True)
    monkeypatch.setattr(runner, "providers", lambda suite: [reference, fake])
    store = ResultsStore(tmp_path)
    report = runner.run(suites=("attention",), case_names=["clip-text-77"], modes=("forward",),
                        ident=identity("cpu"), store=store)
    (triton,) = [r for r in report.results if r.provider == "triton"]
    assert triton.status == "interpreted" and triton.time_ms is None and triton.memory is None
    assert triton.agrees and math.isfinite(triton.agreement)
    rows = store.read(strict=True).frame
    assert rows.loc[rows["provider"] == "triton", "metric"].tolist() == ["agreement"]
    assert "not a kernel timing" in runner.format_summary(report)


def test_a_provider_that_disagrees_fails_the_run():
    reference = runner.providers("attention")[0]

    def wrong(case, wl):
        fn = reference.build(case, wl)
        return lambda q, k, v: fn(q, k, v) * 1.01  # a 1% error: far beyond float32's allowance

    bad = Provider("broken", "attention", "scaled output", wrong)
    wl = runner.make_workload(cases.get("bert-base-128", "cpu"))
    gold = runner._gold(wl.case, wl, reference, need_grads=False)
    (result,) = runner._measure_provider(wl.case, bad, wl, gold, ("forward",), identity("cpu"), {})
    assert result.agrees is False and result.agreement > 1 and "DISAGREES" in result.note
