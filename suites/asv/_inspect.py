"""What the static-resource asv benchmarks share: the inspect rows, compiled once per module and target.

A row is one shipped configuration with one specialization that the catalog's launches give it
(``fusebench inspect`` says how), named ``kernel [config] {specialization}``.

Kernels imported under TRITON_INTERPRET=1 cannot be compiled (fusebench/inspect.py says why), and
the process that imports this file may be a test session running under the interpreter. So nothing
here imports ``kernels``: the spec list and the compiled resources come from ``fusebench inspect`` run
in a fresh process with TRITON_INTERPRET=0, and are cached on disk under a key made of the sources
that decide them (every ``kernels/*.py``, the inspect and launch-recording modules, the case catalog and
the triton version). The
first benchmark of a (module, target) compiles the whole module for it; the rest read the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ["sm_80", "sm_90"]
NO_SPECS = "(no shipped kernel configurations)"

_LIST_CODE = """
import json
from fusebench.inspect import catalog_specs, row_label
import kernels, pkgutil, importlib
rows = []
for info in pkgutil.iter_modules(kernels.__path__):
    if not info.name.startswith("_"):
        rows += [[info.name, row_label(s.kernel, s.config, s.specialization)] for s in catalog_specs([info.name])[0]]
print(json.dumps(rows))
"""


def _cache_dir() -> Path:
    path = Path(os.environ.get("FUSEBENCH_INSPECT_CACHE", Path(tempfile.gettempdir()) / "fusebench-inspect"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sources_key() -> str:
    import importlib.metadata

    digest = hashlib.sha256(importlib.metadata.version("triton").encode())
    decisive = ("inspect.py", "sass_cost.py", "specializations.py", "cases.py", "providers.py")
    for path in sorted((ROOT / "kernels").glob("*.py")) + [ROOT / "fusebench" / name for name in decisive]:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _fresh_python(args: list[str], timeout: float) -> str:
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise NotImplementedError(f"fusebench inspect failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def _cached(name: str, make) -> object:
    path = _cache_dir() / f"{name}-{_sources_key()}.json"
    if path.exists():
        return json.loads(path.read_text())
    value = make()
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)  # atomic: a concurrent benchmark reads all or nothing
    return value


def spec_modules() -> dict[str, str]:
    """``{"attention.forward [fp16 D64 M128 N64 w4 s3] {=1: GROUPS}": "attention", ...}`` for every row.

    Listing the rows records the catalog's launches first (tens of seconds of interpreter work). With
    ``FUSEBENCH_INSPECT_LIST=cached`` (the test suites set it: they check the classes' shape, not the rows)
    only a listing already cached is read, and none gives no rows."""
    listed = (_cache_dir() / f"specs-{_sources_key()}.json").exists()
    if os.environ.get("FUSEBENCH_INSPECT_LIST") == "cached" and not listed:
        return {}
    try:
        rows = _cached("specs", lambda: json.loads(_fresh_python(["-c", _LIST_CODE], 300).strip().splitlines()[-1]))
    except (NotImplementedError, subprocess.TimeoutExpired, ValueError, IndexError):
        return {}
    return {spec: module for module, spec in rows}


def resources(spec: str, target: str, modules: dict[str, str]) -> dict:
    """The inspect row of ``spec`` on ``target``; NotImplementedError (asv: skipped) when there is none."""
    if spec not in modules:
        raise NotImplementedError(f"no shipped kernel configuration {spec!r} in this commit")
    module, capability = modules[spec], target.removeprefix("sm_")

    def compile_module():
        out = _fresh_python(["-m", "fusebench.cli", "inspect", "--json", "--no-store", "--modules", module,
                             "--targets", capability], 3000)
        return {f"{row['kernel']} [{row['config']}] {{{row['specialization']}}}": row for row in json.loads(out)}

    row = _cached(f"{module}-{target}", compile_module).get(spec)
    if row is None or not row["compiled"]:
        raise NotImplementedError(f"{spec} does not compile for {target}: {row and row['error']}")
    return row
