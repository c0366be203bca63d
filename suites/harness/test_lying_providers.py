"""Lying providers, registered through the seams a user would use, are caught, not ranked, or flagged.

Each liar is registered with ``reference.attention.register_attention_backend`` or
``reference.gnn.register_aggregation_backend``, so the runner discovers it as it would a real kernel.
"""

import time
from dataclasses import replace

import pytest
import torch

import reference.attention as attention
import reference.gnn as gnn
from fusebench import compare, measure, metrics, report, runner
from fusebench.cases import get
from fusebench.device import identity
from fusebench.gold import compute_gold
from fusebench.providers import make_workload, providers
from fusebench.store import ResultsStore


@pytest.fixture
def seams(monkeypatch):
    """Registrations made by a test are undone after it: each seam's table is swapped for a copy."""
    monkeypatch.setattr(attention.ATTENTION_BACKENDS, "registered", dict(attention.ATTENTION_BACKENDS.registered))
    monkeypatch.setattr(gnn.AGGREGATE_BACKENDS, "registered", dict(gnn.AGGREGATE_BACKENDS.registered))


def _honest(q, k, v, **options):
    return attention.scaled_dot_product_attention(q, k, v, backend="reference", **options)


def zeros(q, k, v, **options):
    return _honest(q, k, v, **options) * 0  # still differentiable, so its gradients are checked too


def one_percent_off(q, k, v, **options):
    return _honest(q, k, v, **options) * 1.01


def ignores_the_causal_mask(q, k, v, *, is_causal=False, **options):
    return _honest(q, k, v, is_causal=False, **options)


def wrong_only_when_timed(q, k, v, **options):
    out = _honest(q, k, v, **options)
    return out if torch.is_grad_enabled() else out * 0  # right under grad, wrong under no_grad


def sleeps_30_percent_longer(q, k, v, **options):
    # A busy wait, not time.sleep: a sleeper yields its core, and on an oversubscribed machine the scheduler
    # then favours it, so a time.sleep liar came out faster than the honest provider (0.47 vs 1.11 ms).
    start = time.perf_counter()
    out = _honest(q, k, v, **options)
    deadline = start + 1.3 * (time.perf_counter() - start)
    while time.perf_counter() < deadline:
        pass
    return out


def ignores_isolated_nodes(graph, x, *, reduce, edge_weight, normalize):
    out = gnn.aggregate(graph, x, reduce=reduce, edge_weight=edge_weight, normalize=normalize)
    isolated = torch.bincount(graph.edge_index[1], minlength=x.shape[0]) == 0
    return torch.where(isolated[:, None], x, out)  # as if every node had a self-loop


def _checked(case_name, provider_name, modes=("forward",)):
    case = get(case_name, "cpu")
    wl = make_workload(case)
    known = providers(case.suite)
    reference = next(p for p in known if p.name == "reference")
    gold = compute_gold(case, wl, reference, any(m != "forward" for m in modes))
    liar = next(p for p in known if p.name == provider_name)
    return [r for r, _ in measure.check_provider(case, liar, wl, gold, modes, identity("cpu"))]


def test_zeros_and_a_causal_ignoring_provider_get_no_figure_and_are_listed_as_disagreeing(seams, tmp_path):
    attention.register_attention_backend("zeros", zeros)
    attention.register_attention_backend("no-causal", ignores_the_causal_mask)
    store = ResultsStore(tmp_path)
    run = runner.run(suites=("attention",), case_names=["clip-text-77"], provider_names=["reference", "zeros",
                     "no-causal"], modes=("forward", "backward"), ident=identity("cpu"), store=store, repeats=1)
    liars = [r for r in run.results if r.provider != "reference"]
    assert len(liars) == 4 and all(r.status == "disagrees" and r.agrees is False and r.time_ms is None
                                   and r.memory is None for r in liars)
    assert run.failed and "DISAGREEING: 4 result(s)" in runner.format_summary(run)
    frame = store.read(strict=True).frame
    stored = frame[frame["provider"] != "reference"]
    assert set(stored["metric"]) == {"agreement"} and (stored["agrees"] == False).all()  # noqa: E712
    assert (stored["agreement"] > 1).all()
    ranked = compare.against_reference(frame)
    assert [t.attrs["title"].split()[4] for t in ranked] == []  # nothing to rank the reference against
    listed = compare.excluded(frame)
    assert set(listed["provider"]) == {"zeros", "no-causal"} and len(listed) == 4
    assert "zeros" in report.format_not_ranked(frame) and "no-causal" in report.format_not_ranked(frame)


def test_a_provider_one_percent_off_is_caught_on_output_and_gradients(seams):
    attention.register_attention_backend("one-percent", one_percent_off)
    forward, backward = _checked("bert-base-128", "one-percent", ("forward", "backward"))
    assert forward.status == backward.status == "disagrees"
    assert forward.agreement > 1 and backward.agreement > 1


def test_a_provider_wrong_only_under_no_grad_is_caught_in_the_mode_it_is_timed_in(seams):
    # The function timed in forward mode runs under no_grad; the check must judge that very function.
    attention.register_attention_backend("sly", wrong_only_when_timed)
    forward, backward = _checked("bert-base-128", "sly", ("forward", "backward"))
    assert forward.status == "disagrees"
    assert backward.status == "measured" or backward.agrees  # its gradients are right


def test_a_graph_provider_that_ignores_isolated_nodes_is_caught(seams):
    gnn.register_aggregation_backend("no-isolated", ignores_isolated_nodes)
    (result,) = _checked("mean/arxiv-like", "no-isolated")
    assert result.status == "disagrees" and result.agreement > 1


class _VirtualClock:
    """A clock the providers advance by what they cost, read with seeded noise: the 2-core machine the tests
    share is oversubscribed, and its load swings a real CPU time 4x between rounds (0.30 to 1.15 ms
    measured), which would test the weather rather than the pipeline."""

    def __init__(self, seed: int, noise: float = 0.10):
        self.spent, self.noise = 0.0, noise
        self.rng = torch.Generator().manual_seed(seed)

    def provider(self, cost_ms: float):
        def call(q, k, v, **options):
            self.spent += cost_ms
            return _honest(q, k, v, **options)
        return call

    def timing(self, fn, device, **options):
        samples = []
        for _ in range(20):
            self.spent = 0.0
            fn()
            jitter = 1 + self.noise * (2 * torch.rand((), generator=self.rng).item() - 1)
            samples.append(self.spent * jitter)
        return metrics.Timing(metrics.Quantiles.of(samples), samples, "virtual clock", 1)


def _two_providers(monkeypatch, tmp_path, seed, costs):
    clock = _VirtualClock(seed)
    monkeypatch.setattr(measure, "timing", clock.timing)
    for name, cost in costs.items():
        attention.register_attention_backend(name, clock.provider(cost))
    store = ResultsStore(tmp_path)
    runner.run(suites=("attention",), case_names=["bert-base-128"], provider_names=list(costs), modes=("forward",),
               ident=identity("cpu"), store=store, repeats=3)
    return compare.providers(store.read(strict=True).frame, *costs)


def test_a_provider_30_percent_slower_is_flagged(seams, monkeypatch, tmp_path, seed):
    table = _two_providers(monkeypatch, tmp_path, seed, {"honest": 1.0, "slow": 1.3})
    assert table["n_a"].iloc[0] == table["n_b"].iloc[0] == 3  # three interleaved rounds each
    assert table["speedup"].iloc[0] == pytest.approx(1 / 1.3, rel=0.05)
    assert bool(table["changed"].iloc[0]) is True


def test_two_equal_providers_under_the_same_noise_are_not_flagged(seams, monkeypatch, tmp_path, seed):
    table = _two_providers(monkeypatch, tmp_path, seed, {"honest": 1.0, "twin": 1.0})
    assert table["speedup"].iloc[0] == pytest.approx(1.0, rel=0.05)
    assert bool(table["changed"].iloc[0]) is False


def test_a_figure_faster_than_physics_on_a_made_up_device_is_implausible_and_not_ranked(monkeypatch, tmp_path):
    # A made-up GPU a million times slower than a CPU: an honest CPU timing beats its roofline bound.
    slow_gpu = metrics.DevicePeak("Made-up GPU", {"float32": 1e-6, "bfloat16": 1e-6, "float16": 1e-6}, 1e-3,
                                  "spec sheet: Made-up GPU")
    monkeypatch.setattr(metrics, "PEAKS", metrics.PEAKS + (slow_gpu,))
    ident = replace(identity("cpu"), kind="cuda", name="NVIDIA Made-up GPU")
    case = get("bert-base-128", "cpu")
    wl = make_workload(case)
    reference = next(p for p in providers("attention") if p.name == "reference")
    gold = compute_gold(case, wl, reference, False)
    checked = measure.check_provider(case, reference, wl, gold, ("forward",), ident)
    measure.measure(checked, ident, device=wl.device, workload=wl, repeats=1)
    ((result, _),) = checked
    assert "faster than 0.9x the" in result.implausible and "above the Made-up GPU peak" in result.implausible
    store = ResultsStore(tmp_path)
    store.append(runner.rows_for(result, ident, "r1", "2026-01-01T00:00:00Z"))
    frame = store.read(strict=True).frame
    assert frame.loc[frame["metric"] == "time", "flags"].str.contains("implausible").all()
    assert set(compare.excluded(frame)["provider"]) == {"reference"}
    assert compare._trusted_times(frame).empty  # no speedup is computed from it
