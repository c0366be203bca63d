"""The asv flow end to end on the CPU: results for two commits, published, and seen in a real browser.

asv is pointed at a throwaway git repository with two commits (this repository's history is never
touched) and at temporary results and html directories; the benchmarks are this checkout's suites/asv.
"""

import itertools
import json
import os
import urllib.parse
from pathlib import Path

import pytest
from headless_browser import binaries_or_skip, graph_series
from scratch_git import repository_with_commits

from fusebench import dashboard
from fusebench.device import identity

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = "bench_attention.AttentionSpeed.track_time"
PARAMS = ("'bert-base-128'", "'sdpa-math'", "'forward'")
SELECT = r"AttentionSpeed.track_time\('bert-base-128', 'sdpa-math', 'forward'\)"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(html dir, config, the two commits) after recording both and publishing."""
    base = tmp_path_factory.mktemp("asv")
    repo = base / "repo"
    commits = repository_with_commits(repo, "first", "second")
    config = base / "asv.conf.json"
    conf = json.loads((ROOT / "asv.conf.json").read_text())
    conf.update(repo=str(repo), branches=["main"], benchmark_dir=str(ROOT / "suites" / "asv"),
                env_dir=str(base / "env"), results_dir=str(base / "results"), html_dir=str(base / "html"))
    config.write_text(json.dumps(conf))
    env = {**os.environ, "HOME": str(base / "home")}  # asv keeps its machine file in ~: not the user's
    for commit in commits:
        # allow_dirty: the benchmarks come from this checkout, which may hold uncommitted work while testing
        machine = dashboard.record(commit=commit, bench=SELECT, config=config, env=env, allow_dirty=True)
    return dashboard.publish(config), config, commits, machine


def test_record_keeps_one_result_per_commit_and_a_device_sidecar_per_commit(published):
    _, config, commits, machine = published
    ident = identity()
    assert machine == dashboard.asv_machine(ident) and f"torch{ident.torch}".replace("+", "_") in machine
    assert machine.endswith("-dirty") == ident.dirty  # a dirty tree's results are marked, never HEAD's own
    results = dashboard.results_dir(config) / machine
    for commit in commits:
        sidecar = json.loads(dashboard.sidecar_path(machine, commit, config).read_text())
        assert sidecar["asv_machine"] == machine and sidecar["kind"] == "cpu" and sidecar["recorded_commit"] == commit
    stored = [json.loads(p.read_text()) for p in results.glob("*-existing-*.json")]
    assert sorted(r["commit_hash"] for r in stored) == sorted(commits)
    # the versions are in what asv itself records with every result
    assert all(f"torch {ident.torch} triton {ident.triton}" in r["params"]["os"] for r in stored)


def test_a_dirty_tree_is_refused_unless_asked(monkeypatch, tmp_path):
    from dataclasses import replace

    dirty = replace(identity(), dirty=True)
    monkeypatch.setattr(dashboard, "identity", lambda: dirty)
    ran = []
    monkeypatch.setattr(dashboard, "_asv", lambda *args, **kw: ran.append(args))
    config = tmp_path / "asv.conf.json"  # were the refusal broken, nothing would land in the repository
    config.write_text(json.dumps({**json.loads((ROOT / "asv.conf.json").read_text()),
                                  "results_dir": str(tmp_path / "results")}))
    with pytest.raises(dashboard.DirtyTree, match="uncommitted changes"):
        dashboard.record(commit="abc", config=config)
    assert ran == []  # refused before asv ran


def test_a_sidecar_is_never_overwritten(tmp_path):
    path = tmp_path / "m" / "abc.json"
    first = dashboard._write_sidecar(path, {"driver": "550"})
    again = dashboard._write_sidecar(path, {"driver": "550"})
    changed = dashboard._write_sidecar(path, {"driver": "560"})
    assert first == again == path and changed != path
    assert json.loads(path.read_text()) == {"driver": "550"} and json.loads(changed.read_text()) == {"driver": "560"}


def test_published_graph_has_a_point_for_each_commit(published):
    html, _, _, machine = published
    (graph,) = html.glob(f"graphs/branch-main/machine-{machine}/**/{BENCHMARK}.json")  # os-<versions>/python-..
    params = json.loads((html / "index.json").read_text())["benchmarks"][BENCHMARK]["params"]
    column = [list(p) for p in itertools.product(*params)].index(list(PARAMS))
    points = [(revision, values[column]) for revision, values in json.loads(graph.read_text())]
    assert len(points) == 2 and all(value > 0 for _, value in points)
    page = (html / "index.html").read_text()
    assert "https://" not in page.split("<body")[0]  # every script and style sheet is served locally


@pytest.fixture
def browser_binaries():
    return binaries_or_skip()


@pytest.mark.browser
def test_headless_chromium_shows_both_points_on_the_graph(browser_binaries, published):
    query = "&".join(f"p-{name}={urllib.parse.quote(value)}"
                     for name, value in zip(("case", "provider", "mode"), PARAMS, strict=True))
    series, state = graph_series(browser_binaries, published[0], f"{BENCHMARK}?{query}")
    assert series == [["case-bert-base-128; mode-forward; provider-sdpa-math", 2]], state
