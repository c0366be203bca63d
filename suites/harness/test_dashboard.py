"""The asv flow end to end on the CPU: results for two commits, published, and seen in a real browser.

asv is pointed at a throwaway git repository with two commits (this repository's history is never
touched) and at temporary results and html directories; the benchmarks are this checkout's suites/asv.
"""

import functools
import http.server
import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from fusebench import dashboard
from fusebench.device import identity

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = "bench_attention.AttentionSpeed.track_time"
PARAMS = ("'bert-base-128'", "'sdpa-math'", "'forward'")
SELECT = r"AttentionSpeed.track_time\('bert-base-128', 'sdpa-math', 'forward'\)"


def _git(repo, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(html dir, config, the two commits) after recording both and publishing."""
    base = tmp_path_factory.mktemp("asv")
    repo = base / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    commits = []
    for message in ("first", "second"):
        _git(repo, "commit", "-q", "--allow-empty", "-m", message)
        commits.append(_git(repo, "rev-parse", "HEAD"))
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _WebDriver:
    """The W3C WebDriver protocol over HTTP to chromedriver: enough to load a page and run a script."""

    def __init__(self, chromedriver: str, chromium: str, profile: str):
        self.port = _free_port()
        self.process = subprocess.Popen([chromedriver, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {"binary": chromium, "args": args}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})["sessionId"]

    def _call(self, method, path, body=None):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def open(self, url):
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def script(self, source):
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": source, "args": []})

    def close(self):
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.process.terminate()
            self.process.wait(timeout=30)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# Reads the points flot drew: the series of the plot asv's graph page put into #main-graph.
_POINTS = """
var plot = window.jQuery && jQuery('#main-graph').data('plot');
if (!plot) { return null; }
return plot.getData().map(function (s) {
    return [s.label, s.data.filter(function (p) { return p[1] !== null; }).length];
});
"""


@pytest.fixture
def browser_binaries():
    """(chromium, chromedriver), or a skip with the reason, before any asv work is done."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    return chromium, chromedriver


@pytest.mark.browser
def test_headless_chromium_shows_both_points_on_the_graph(browser_binaries, published):
    chromium, chromedriver = browser_binaries
    html = published[0]
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    driver = None
    try:
        with tempfile.TemporaryDirectory() as profile:
            driver = _WebDriver(chromedriver, chromium, profile)
            query = "&".join(f"p-{name}={urllib.parse.quote(value)}"
                             for name, value in zip(("case", "provider", "mode"), PARAMS, strict=True))
            driver.open(f"http://127.0.0.1:{server.server_port}/#{BENCHMARK}?{query}")
            series, deadline = None, time.monotonic() + 60
            while not series and time.monotonic() < deadline:
                series = driver.script(_POINTS)
                time.sleep(0.2)
            state = driver.script("return [document.title, location.href];")
            driver.close()
            driver = None
    finally:
        if driver is not None:
            driver.close()
        server.shutdown()
    assert series == [["case-bert-base-128; mode-forward; provider-sdpa-math", 2]], state
