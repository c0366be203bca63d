"""The benchmark runner on the CPU: agreement before speed, rows stored, no interpreter time ever."""

import math

import pytest
import torch

from fusebench import cases, measure, runner
from fusebench.device import identity
from fusebench.gold import compute_gold
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
    # A stand-in "triton" provider built on the reference: what is checked is the runner's handling of any
    # provider flagged triton on a CPU under TRITON_INTERPRET=1, not the kernel (quick, whatever the kernel costs).
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
    gold = compute_gold(wl.case, wl, reference, need_grads=False)
    (result,) = measure.measure_provider(wl.case, bad, wl, gold, ("forward",), identity("cpu"), {})
    assert result.agrees is False and result.agreement > 1 and "DISAGREES" in result.note


@pytest.mark.parametrize("value, on", [("1", True), ("true", True), ("On", True), ("yes", True), ("y", True),
                                       ("0", False), ("off", False), ("", False), ("2", False)])
def test_interpretation_is_read_as_triton_reads_it(monkeypatch, value, on):
    from fusebench.device import interpreting_triton

    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert interpreting_triton() is on


def test_an_interpreted_kernel_is_never_timed_on_a_gpu_host_either(monkeypatch):
    # TRITON_INTERPRET=true on a CUDA machine still emulates: the old check (device == cpu) would have timed it.
    from dataclasses import replace

    monkeypatch.setenv("TRITON_INTERPRET", "true")
    reference = runner.providers("attention")[0]
    fake = Provider("triton", "attention", "stand-in", reference.build, triton=True)
    case = cases.get("clip-text-77", "cpu")
    wl = runner.make_workload(case)
    gold = compute_gold(case, wl, reference, False)
    gpu_host = replace(identity("cpu"), kind="cuda", name="NVIDIA H200")
    ((result, timed),) = measure.check_provider(case, fake, wl, gold, ("forward",), gpu_host)
    assert result.status == "interpreted" and timed is None


def test_large_cases_are_checked_whole_against_a_float32_gold_and_say_so():
    import torch

    assert runner.gold_precision(cases.get("bert-base-2048"), "cuda")[0] == torch.float32
    assert "float32 reference on cuda" in runner.gold_precision(cases.get("gpt-gqa-8k"), "cuda")[1]
    assert runner.gold_precision(cases.get("bert-base-512"), "cuda") == (torch.float64, "float64 reference")
    assert runner.gold_precision(cases.get("bert-base-2048", "cpu"), "cpu")[0] == torch.float64


def test_each_timed_row_records_threads_load_and_rounds(tmp_path):
    store = ResultsStore(tmp_path)
    runner.run(suites=("attention",), case_names=["clip-text-77"], provider_names=["reference"], modes=("forward",),
               ident=identity("cpu"), store=store, repeats=3, threads=1)
    time_row = store.read(strict=True).frame.query("metric == 'time'").iloc[0]
    assert time_row["threads"] == 1 and time_row["load_before"] >= 0 and time_row["load_after"] >= 0
    assert len(time_row["repeats"].split(";")) == 3 and time_row["samples"] >= 3
    assert time_row["gold"] == "float64 reference"
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        runner.run(suites=("attention",), ident=identity("cpu"), store=None, repeats=0)


def test_a_timing_on_an_oversubscribed_machine_is_marked_and_said_in_the_summary(monkeypatch):
    from fusebench import metrics

    timing = lambda before, after, threads: metrics.Timing(metrics.Quantiles.constant(1.0), [1.0], "t", threads,
                                                           before, after, 2)
    assert not timing(0.2, 1.2, 1).oversubscribed  # our one thread on an idle 2-core machine
    assert timing(2.0, 2.5, 1).oversubscribed  # two others runnable already, plus ours
    assert timing(0.0, 4.0, 2).oversubscribed  # the load rose past the cores while we ran
    monkeypatch.setattr(measure, "timing", lambda fn, device, **options: timing(8.0, 9.0, 1))
    report = runner.run(suites=("attention",), case_names=["clip-text-77"], provider_names=["reference"],
                        modes=("forward",), ident=identity("cpu"), store=None, repeats=1)
    (result,) = report.results
    assert result.oversubscribed and "oversubscribed" in result.flags
    assert "OVERSUBSCRIBED: 1 of 1 figures" in runner.format_summary(report)
