"""What the dashboard's browser tests share: a published site served on localhost, opened in headless Chromium
(driven over the W3C WebDriver protocol, chromedriver), and the points flot drew on asv's graph page."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest


def binaries_or_skip() -> tuple[str, str]:
    """(chromium, chromedriver), or a skip with the reason, before any asv work is done."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    return chromium, chromedriver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriver:
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


@contextlib.contextmanager
def serve(directory: Path):
    """The published site at ``http://127.0.0.1:<port>/`` while the block runs; yields the base address."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


# Reads the points flot drew: the series of the plot asv's graph page put into #main-graph.
_POINTS = """
var plot = window.jQuery && jQuery('#main-graph').data('plot');
if (!plot) { return null; }
return plot.getData().map(function (s) {
    return [s.label, s.data.filter(function (p) { return p[1] !== null; }).length];
});
"""


def graph_series(binaries: tuple[str, str], html: Path, fragment: str, expected_series: int = 1,
                 timeout: float = 60) -> tuple[list, list]:
    """([label, number of points] of each series flot drew on ``html``'s page ``#fragment``, [title, url]),
    polled until ``expected_series`` series are drawn or ``timeout`` seconds pass (graphs load one by one)."""
    chromium, chromedriver = binaries
    with serve(html) as base, tempfile.TemporaryDirectory() as profile:
        driver = WebDriver(chromedriver, chromium, profile)
        try:
            driver.open(f"{base}#{fragment}")
            series, deadline = None, time.monotonic() + timeout
            while (not series or len(series) < expected_series) and time.monotonic() < deadline:
                series = driver.script(_POINTS)
                time.sleep(0.2)
            state = driver.script("return [document.title, location.href];")
        finally:
            driver.close()
    return series, state
