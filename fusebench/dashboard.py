"""`fusebench dashboard`: asv's history pages over ``results/asv``.

* :func:`record` runs the asv suites (suites/asv) for the checked-out commit with the current Python
  (``asv run -E existing --set-commit-hash HEAD``) under a machine name that carries the GPU
  (:func:`fusebench.device.machine_name`: asv's machine record has no GPU field), and stores the full
  device identity in a sidecar, ``results/asv-devices/<machine>.json`` (beside asv's results directory:
  asv tries to load every ``.json`` file inside it as a result).
* :func:`publish` runs ``asv publish`` and then makes the pages work offline: asv's index.html loads
  jQuery, flot, bootstrap and two small plugins from CDNs, so their links are rewritten to copies
  shipped in ``fusebench/dashboard_static`` (see its LICENSES.txt).
* :func:`preview` runs ``asv preview`` (serves the pages until interrupted).

Every function takes the asv config to use (default: the repository's asv.conf.json), so tests can
point asv at a temporary repository and results directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from fusebench.device import ROOT, identity, machine_name

__all__ = ["record", "publish", "preview", "html_dir", "results_dir", "sidecar_path", "DEFAULT_CONFIG"]

DEFAULT_CONFIG = ROOT / "asv.conf.json"
STATIC = Path(__file__).resolve().parent / "dashboard_static"
# CDN file name in asv's index.html -> the local copy in dashboard_static/
_LOCAL_COPIES = {
    "jquery-3.3.1.min.js": "jquery-3.3.1.min.js",
    "jquery.flot.min.js": "jquery.flot.js",
    "jquery.flot.time.min.js": "jquery.flot.time.js",
    "jquery.flot.selection.min.js": "jquery.flot.selection.js",
    "jquery.flot.categories.min.js": "jquery.flot.categories.js",
    "jquery.flot.orderBars.js": "jquery.flot.orderBars.js",
    "stupidtable.min.js": "stupidtable.min.js",
    "md5.min.js": "md5.min.js",
    "bootstrap.min.js": "bootstrap.min.js",
    "bootstrap.min.css": "bootstrap.min.css",
}


def _config(config) -> tuple[Path, dict]:
    path = Path(config) if config is not None else DEFAULT_CONFIG
    return path, json.loads(path.read_text())


def _dir(config, key: str) -> Path:
    path, conf = _config(config)
    value = Path(conf[key])
    return value if value.is_absolute() else path.parent / value


def html_dir(config=None) -> Path:
    return _dir(config, "html_dir")


def results_dir(config=None) -> Path:
    return _dir(config, "results_dir")


def sidecar_path(machine: str, config=None) -> Path:
    """Where :func:`record` keeps the device identity of asv machine ``machine``."""
    results = results_dir(config)
    return results.parent / f"{results.name}-devices" / f"{machine}.json"


def _asv(args: list[str], config, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    path, _ = _config(config)
    command = [sys.executable, "-m", "asv", *args, "--config", str(path)]
    return subprocess.run(command, cwd=path.parent, env=env, check=check)


def record(*, commit: str | None = None, bench: str | None = None, config=None, python: str | None = None,
           env: dict | None = None) -> str:
    """Run the asv suites for ``commit`` (default: HEAD) on this machine; returns the asv machine name.

    The benchmarks import fusebench from this checkout (``ASV_PYTHONPATH``), whatever the environment
    has installed, so the results belong to the code of the commit recorded.
    """
    ident = identity()
    machine = machine_name(ident)
    env = dict(os.environ if env is None else env)
    env["ASV_PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("ASV_PYTHONPATH")]))
    commit = commit or ident.commit
    if commit == "unknown":
        raise RuntimeError("asv records results per commit, and this checkout has no git commit")
    cpu = ident.cpu if ident.kind == "cpu" else f"{ident.cpu}; GPU {ident.name} (sm {ident.compute_capability})"
    _asv(["machine", "--yes", "--machine", machine, "--cpu", cpu], config, env)
    args = ["run", "-E", f"existing:{python or sys.executable}", "--set-commit-hash", commit, "--machine", machine]
    if bench:
        args += ["--bench", bench]
    _asv(args, config, env)
    sidecar = sidecar_path(machine, config)
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    sidecar.write_text(json.dumps({**ident.as_dict(), "asv_machine": machine}, indent=2) + "\n")
    return machine


def _localize(page: Path) -> None:
    """Point every CDN <script>/<link> of ``page`` at vendor/ copies and drop their integrity checks."""
    def rewrite(match: re.Match) -> str:
        tag = match.group(0)
        url = re.search(r'(?:src|href)="(https?://[^"]+)"', tag)
        if url is None:
            return tag
        local = _LOCAL_COPIES.get(url.group(1).rsplit("/", 1)[-1])
        if local is None:
            return tag
        tag = tag.replace(url.group(1), f"vendor/{local}")
        return re.sub(r'\s(?:integrity|crossorigin|referrerpolicy)="[^"]*"', "", tag)

    page.write_text(re.sub(r"<(?:script|link)\b[^>]*>", rewrite, page.read_text()))


def publish(config=None) -> Path:
    """``asv publish``, then make the pages load their scripts from local copies; returns the html dir."""
    _asv(["publish"], config)
    out = html_dir(config)
    vendor = out / "vendor"
    vendor.mkdir(exist_ok=True)
    for name in set(_LOCAL_COPIES.values()):
        shutil.copyfile(STATIC / name, vendor / name)
    for page in out.glob("*.html"):
        _localize(page)
    return out


def preview(port: int = 8080, config=None) -> int:
    """``asv preview``: serve the published pages on localhost until interrupted."""
    print(f"serving {html_dir(config)} at http://127.0.0.1:{port}/ (Ctrl-C to stop)")
    try:
        return _asv(["preview", "--port", str(port)], config, check=False).returncode
    except KeyboardInterrupt:
        return 0
