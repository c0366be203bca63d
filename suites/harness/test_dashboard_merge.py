"""`fusebench dashboard --merge`: results recorded on several machines into one tree, one site, one store.

The fast tests merge synthetic trees (asv keeps one folder per machine; merging copies files, so their content
only has to be recognisable); the `slow` one records two machines with asv, merges and publishes them.
"""

import json
import os
import urllib.parse
from dataclasses import replace
from pathlib import Path

import pytest
from headless_browser import binaries_or_skip, graph_series
from scratch_git import repository_with_commits

from fusebench import compare, dashboard
from fusebench.device import identity
from fusebench.store import COLUMNS, ResultsStore

ROOT = Path(__file__).resolve().parents[2]
SELECT = r"AttentionSpeed.track_time\('bert-base-128', 'sdpa-math', 'forward'\)"


def _config(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    config = base / "asv.conf.json"
    conf = json.loads((ROOT / "asv.conf.json").read_text())
    conf.update(results_dir=str(base / "results" / "asv"), html_dir=str(base / "html"), env_dir=str(base / "env"))
    config.write_text(json.dumps(conf))
    return config


def _machine_tree(root: Path, machine: str, device: str, p50s) -> Path:
    """A copy of one machine's results/: its asv folder, its device sidecar, its store rows."""
    asv = root / "asv"
    (asv / machine).mkdir(parents=True)
    (asv / machine / "machine.json").write_text(json.dumps({"machine": machine, "version": 1}))
    (asv / machine / "c0ffee-existing.json").write_text(json.dumps({"commit_hash": "c0ffee", "machine": machine}))
    (asv / "benchmarks.json").write_text(json.dumps({"version": 2}))
    sidecar = root / "asv-devices" / machine / "c0ffee.json"
    sidecar.parent.mkdir(parents=True)
    sidecar.write_text(json.dumps({"name": device, "asv_machine": machine}))
    rows = []
    for provider, p50 in p50s.items():
        row = dict.fromkeys(COLUMNS, "")
        rounds = (p50 * 0.99, p50, p50 * 1.01)
        row.update(run_id=f"run-{machine}", timestamp="2026-11-30T00:00:00Z", suite="attention", case="bert-base-128",
                   size="gpu", shape="B8", provider=provider, mode="forward", dtype="bfloat16", metric="time",
                   unit="ms", p20=rounds[0], p50=p50, p80=rounds[2], samples=30, agreement=0.5, agrees=True,
                   device_kind="cuda", device=device, commit="c0ffee", host=machine, torch="2.13.0", threads=1,
                   dirty=False, repeats=";".join(map(repr, rounds)))
        rows.append(row)
    ResultsStore(root).append(rows)
    return root


@pytest.fixture
def two_machines(tmp_path):
    a = _machine_tree(tmp_path / "from-a", "box-a-NVIDIA_H100", "NVIDIA H100", {"triton": 1.0})
    b = _machine_tree(tmp_path / "from-b", "box-b-NVIDIA_L4", "NVIDIA L4", {"triton": 4.0})
    return a, b, _config(tmp_path / "here")


def test_merge_brings_every_machine_its_sidecars_and_its_store_rows(two_machines):
    a, b, config = two_machines
    machines = dashboard.merge([a, b], config)
    assert machines == ["box-a-NVIDIA_H100", "box-b-NVIDIA_L4"]
    results = dashboard.results_dir(config)
    for source in (a, b):
        for path in (p for p in source.rglob("*") if p.is_file()):
            merged = results.parent / path.relative_to(source)
            assert merged.read_bytes() == path.read_bytes(), f"{path} not merged as it was"
    read = ResultsStore(results.parent).read(strict=True)
    assert sorted(read.frame["device"]) == ["NVIDIA H100", "NVIDIA L4"]
    # the merged store answers across machines: the L4 takes 4x the H100's time
    table = compare.devices(read.frame, "NVIDIA L4", "NVIDIA H100")
    assert table["speedup"].iloc[0] == pytest.approx(4.0)


def test_merging_again_changes_nothing_and_an_asv_results_dir_is_accepted(two_machines):
    a, b, config = two_machines
    dashboard.merge([a, b], config)
    before = {p: p.read_bytes() for p in dashboard.results_dir(config).parent.rglob("*") if p.is_file()}
    assert dashboard.merge([a / "asv", b], config) == ["box-a-NVIDIA_H100", "box-b-NVIDIA_L4"]
    after = {p: p.read_bytes() for p in dashboard.results_dir(config).parent.rglob("*") if p.is_file()}
    assert after == before


def test_a_file_with_other_content_under_the_same_name_is_a_conflict_and_nothing_is_copied(two_machines):
    a, b, config = two_machines
    dashboard.merge([a], config)
    results = dashboard.results_dir(config)
    clash = results.parent / "asv-devices" / "box-b-NVIDIA_L4" / "c0ffee.json"  # merged after the asv folder
    clash.parent.mkdir(parents=True)
    clash.write_text("{}")
    with pytest.raises(dashboard.MergeConflict, match="c0ffee.json"):
        dashboard.merge([b], config)
    assert not (results / "box-b-NVIDIA_L4").exists()  # checked before copying: nothing half-merged
    assert clash.read_text() == "{}"


def test_a_directory_without_asv_results_is_refused_by_name(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no asv results"):
        dashboard.merge([tmp_path / "empty"], _config(tmp_path / "here"))


@pytest.fixture(scope="module")
def merged_site(tmp_path_factory):
    """(html dir, merged config, the machines, the commit): two machines' asv results, recorded apart (the
    machine name carries the host), merged into one tree and published as one site."""
    tmp_path = tmp_path_factory.mktemp("fleet")
    repo = tmp_path / "repo"
    (commit,) = repository_with_commits(repo, "first")
    here = identity()
    trees = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        for host in ("box-a", "box-b"):
            base = tmp_path / host
            config = _config(base)
            conf = json.loads(config.read_text()) | {"repo": str(repo), "branches": ["main"],
                                                      "benchmark_dir": str(ROOT / "suites" / "asv")}
            config.write_text(json.dumps(conf))
            monkeypatch.setattr(dashboard, "identity", lambda host=host: replace(here, host=host))
            env = {**os.environ, "HOME": str(base / "home")}
            dashboard.record(commit=commit, bench=SELECT, config=config, env=env, allow_dirty=True)
            trees.append(base / "results")
    target = _config(tmp_path / "merged")
    conf = json.loads(target.read_text()) | {"repo": str(repo), "branches": ["main"]}
    target.write_text(json.dumps(conf))
    machines = dashboard.merge(trees, target)
    return dashboard.publish(target), target, machines, commit


@pytest.mark.slow
def test_two_recorded_machines_publish_into_one_site(merged_site):
    html, target, machines, commit = merged_site
    assert [m.split("-cpu")[0] for m in machines] == ["box_a", "box_b"]
    index = json.loads((html / "index.json").read_text())
    assert sorted(index["params"]["machine"]) == sorted(machines)
    for machine in machines:
        assert (dashboard.results_dir(target).parent / "asv-devices" / machine / f"{commit}.json").is_file()


@pytest.mark.browser
def test_headless_chromium_draws_every_merged_machine_on_one_graph(merged_site):
    binaries = binaries_or_skip()
    html, _, machines, _ = merged_site
    benchmark = "bench_attention.AttentionSpeed.track_time"
    query = "&".join(f"p-{name}={urllib.parse.quote(value)}" for name, value in
                     (("case", "'bert-base-128'"), ("provider", "'sdpa-math'"), ("mode", "'forward'")))
    # asv's graph page selects every machine by default: one series per machine, one point (one commit) each
    series, state = graph_series(binaries, html, f"{benchmark}?{query}", expected_series=len(machines))
    assert series is not None and len(series) == len(machines), (series, state)
    for machine in machines:
        (drawn,) = [s for s in series if f"machine-{machine}" in s[0]]
        assert drawn[1] == 1, (series, state)
