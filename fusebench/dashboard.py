"""`fusebench dashboard`: asv's history pages over ``results/asv``.

* :func:`record` runs the asv suites (suites/asv) for the checked-out commit with the current Python
  (``asv run -E existing --set-commit-hash HEAD``) under a machine name that carries the GPU and the
  torch, triton and CUDA versions (:func:`asv_machine`: asv's machine record has no GPU or library field,
  and results measured under other versions must not share a graph line), with the versions and driver
  also in the machine record's ``os`` field, which asv copies into every result file. It stores the
  full device identity in a sidecar per machine and commit, ``results/asv-devices/<machine>/<commit>.json``
  (beside asv's results directory: asv tries to load every ``.json`` file inside it as a result), and
  never overwrites one: a later record of the same commit under a changed identity adds a dated file.
  A working tree with uncommitted changes is refused (asv would file its results under HEAD) unless
  ``allow_dirty``; then the machine name ends in ``-dirty``, so they never mix with HEAD's own.
* :func:`publish` runs ``asv publish`` and then makes the pages work offline: asv's index.html loads
  jQuery, flot, bootstrap and two small plugins from CDNs, so their links are pointed at checked copies
  of the same versions from npm, cached outside the repository (:mod:`fusebench.dashboard_assets`);
  without them (offline on first use) the pages keep asv's CDN links.
* :func:`merge` copies results recorded on other machines into this tree (asv keeps one folder per
  machine), with their device sidecars and results store files, refusing any file that would overwrite
  a different one before copying anything.
* :func:`preview` runs ``asv preview`` (serves the pages until interrupted).

Every function takes the asv config to use (default: the repository's asv.conf.json), so tests can
point asv at a temporary repository and results directory.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fusebench import dashboard_assets
from fusebench.device import ROOT, DeviceIdentity, identity, machine_name, slug

__all__ = ["record", "publish", "preview", "merge", "MergeConflict",
           "html_dir", "results_dir", "sidecar_path", "asv_machine", "DirtyTree",
           "DEFAULT_CONFIG"]


class DirtyTree(RuntimeError):
    """The checkout has uncommitted changes: its results would be filed under a commit that did not run."""


DEFAULT_CONFIG = ROOT / "asv.conf.json"



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


def sidecar_path(machine: str, commit: str, config=None) -> Path:
    """Where :func:`record` keeps the device identity of asv machine ``machine`` at ``commit``."""
    results = results_dir(config)
    return results.parent / f"{results.name}-devices" / machine / f"{commit}.json"


def asv_machine(ident: DeviceIdentity) -> str:
    """asv's machine name: host and GPU (:func:`fusebench.device.machine_name`), torch, triton and CUDA
    versions, and ``-dirty`` for a tree with uncommitted changes."""
    versions = f"torch{slug(ident.torch)}-triton{slug(ident.triton)}" + (f"-cu{slug(ident.cuda)}" if ident.cuda
                                                                          else "")
    return f"{machine_name(ident)}-{versions}" + ("-dirty" if ident.dirty else "")


def _write_sidecar(path: Path, content: dict) -> Path:
    """Write ``content`` at ``path`` unless a sidecar is there: the same identity is kept as is, a different
    one goes to a dated file beside it. Nothing is overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(content, indent=2, sort_keys=True) + "\n"
    if path.exists():
        if path.read_text() == text:
            return path
        path = path.with_name(f"{path.stem}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    with open(path, "x") as out:  # "x": fail rather than overwrite
        out.write(text)
    return path


def _asv(args: list[str], config, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    path, _ = _config(config)
    command = [sys.executable, "-m", "asv", *args, "--config", str(path)]
    return subprocess.run(command, cwd=path.parent, env=env, check=check)


def record(*, commit: str | None = None, bench: str | None = None, config=None, python: str | None = None,
           env: dict | None = None, allow_dirty: bool = False) -> str:
    """Run the asv suites for ``commit`` (default: HEAD) on this machine; returns the asv machine name.

    The benchmarks import fusebench from this checkout (``ASV_PYTHONPATH``), whatever the environment
    has installed, so the results belong to the code of the commit recorded: a checkout with uncommitted
    changes raises :class:`DirtyTree` unless ``allow_dirty`` (then the machine name says ``-dirty``).
    """
    ident = identity()
    if ident.dirty and not allow_dirty:
        raise DirtyTree(f"{ROOT} has uncommitted changes: asv would file their results under commit "
                        f"{ident.commit[:12]}. Commit them, or pass --allow-dirty to record them marked -dirty.")
    machine = asv_machine(ident)
    env = dict(os.environ if env is None else env)
    env["ASV_PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("ASV_PYTHONPATH")]))
    commit = commit or ident.commit
    if commit == "unknown":
        raise RuntimeError("asv records results per commit, and this checkout has no git commit")
    cpu = ident.cpu if ident.kind == "cpu" else f"{ident.cpu}; GPU {ident.name} (sm {ident.compute_capability})"
    software = (f"{platform.system()} {platform.release()} torch {ident.torch} triton {ident.triton} "
                f"CUDA {ident.cuda or 'none'} driver {ident.driver or 'none'}" + (" dirty" if ident.dirty else ""))
    _asv(["machine", "--yes", "--machine", machine, "--cpu", cpu, "--os", software], config, env)
    args = ["run", "-E", f"existing:{python or sys.executable}", "--set-commit-hash", commit, "--machine", machine]
    if bench:
        args += ["--bench", bench]
    _asv(args, config, env)
    _write_sidecar(sidecar_path(machine, commit, config), {**ident.as_dict(), "asv_machine": machine,
                                                           "recorded_commit": commit})
    return machine


def publish(config=None, *, assets=dashboard_assets.ASSETS, registry: str = dashboard_assets.REGISTRY) -> Path:
    """``asv publish``, then point the pages' CDN links at checked local copies (fetched from ``registry``
    on first use, see :mod:`fusebench.dashboard_assets`); returns the html dir. Without the copies the pages
    keep asv's CDN links, and a line on stderr says why."""
    _asv(["publish"], config)
    out = html_dir(config)
    try:
        copies = dashboard_assets.local_copies(assets, registry=registry)
    except dashboard_assets.AssetsUnavailable as error:
        print(f"fusebench dashboard: the pages load their scripts from asv's CDN links ({error})", file=sys.stderr)
        return out
    for page in out.glob("*.html"):
        dashboard_assets.localize(page, out, copies)
    return out


def preview(port: int = 8080, config=None) -> int:
    """``asv preview``: serve the published pages on localhost until interrupted."""
    print(f"serving {html_dir(config)} at http://127.0.0.1:{port}/ (Ctrl-C to stop)")
    try:
        return _asv(["preview", "--port", str(port)], config, check=False).returncode
    except KeyboardInterrupt:
        return 0


class MergeConflict(RuntimeError):
    """Two trees hold different files under one name: merging would overwrite a result."""


def _asv_tree(source: Path) -> tuple[Path, Path]:
    """(asv results dir, its device sidecars dir) of a copied results tree: a results root holding ``asv/``
    (``results/`` of another checkout) or an asv results dir itself."""
    results = source / "asv" if (source / "asv").is_dir() else source
    if not any(results.glob("*/machine.json")):
        raise ValueError(f"--merge {source}: no asv results there (expected <machine>/machine.json under "
                         f"{source} or {source / 'asv'})")
    return results, results.parent / f"{results.name}-devices"


def _copy_new(source: Path, target: Path) -> int:
    """Copy every file under ``source`` to the same place under ``target``; an identical file already there
    is skipped, a different one raises :class:`MergeConflict`. Returns the number copied."""
    copied = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        there = target / path.relative_to(source)
        if there.exists():
            if there.read_bytes() != path.read_bytes():
                raise MergeConflict(f"{there} exists with other content than {path}; nothing of it was merged")
            continue
        there.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, there)
        copied += 1
    return copied


def merge(sources, config=None) -> list[str]:
    """Merge asv result trees recorded on other machines (and their device sidecars, and their results
    store's ``runs/`` files when the tree is a results root) into this one; returns the machines merged.

    asv keeps one folder per machine, so machines never collide; the same file under one name with other
    content is a conflict (:class:`MergeConflict`), checked for every file before anything is copied.
    ``benchmarks.json`` (the benchmarks' description) is taken from a source when this tree has none.
    """
    results = results_dir(config)
    devices = results.parent / f"{results.name}-devices"
    store_runs = results.parent / "runs"
    plan = []  # (source dir, target dir)
    machines = []
    for source in map(Path, sources):
        tree, sidecars = _asv_tree(source)
        for machine_json in sorted(tree.glob("*/machine.json")):
            machines.append(machine_json.parent.name)
            plan.append((machine_json.parent, results / machine_json.parent.name))
        if sidecars.is_dir():
            plan.append((sidecars, devices))
        if (tree.parent / "runs").is_dir() and tree != source:
            plan.append((tree.parent / "runs", store_runs))
        if (tree / "benchmarks.json").is_file() and not (results / "benchmarks.json").exists():
            plan.append((tree, results, "benchmarks.json"))
    for step in plan:  # conflicts first: a merge that would overwrite anything copies nothing
        if len(step) == 2:
            for path in (p for p in step[0].rglob("*") if p.is_file()):
                there = step[1] / path.relative_to(step[0])
                if there.exists() and there.read_bytes() != path.read_bytes():
                    raise MergeConflict(f"{there} exists with other content than {path}; nothing was merged")
    for step in plan:
        if len(step) == 2:
            _copy_new(*step)
        elif not (step[1] / step[2]).exists():
            step[1].mkdir(parents=True, exist_ok=True)
            shutil.copyfile(step[0] / step[2], step[1] / step[2])
    return machines
