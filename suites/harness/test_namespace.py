"""The `kernels` import-name clash (fusebench/namespace.py, kernels/__init__.py) is caught with advice.

Each scenario runs in a fresh interpreter with a fake Hugging Face `kernels` distribution placed on
PYTHONPATH, so the test never installs or removes anything.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _fake_hub_kernels(tmp_path: Path, with_package: bool) -> Path:
    dist = tmp_path / "kernels-0.9.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kernels\nVersion: 0.9.0\n")
    if with_package:
        (tmp_path / "kernels").mkdir()
        (tmp_path / "kernels" / "__init__.py").write_text("HUB = True\n")
    return tmp_path


def _python(code: str, pythonpath: list[Path]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, pythonpath)))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=pythonpath[0],
                          capture_output=True, text=True, timeout=120)


def test_no_clash_in_this_environment():
    result = _python("from fusebench.namespace import check_kernels_namespace; check_kernels_namespace(); "
                     "import kernels; print(kernels.__fusebench__)", [ROOT])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_hub_kernels_hiding_ours_is_reported_with_advice(tmp_path):
    fake = _fake_hub_kernels(tmp_path, with_package=True)
    result = _python("from fusebench.namespace import check_kernels_namespace; check_kernels_namespace()",
                     [fake, ROOT])
    assert result.returncode != 0
    assert "hides fusebench's kernels" in result.stderr and "pip uninstall kernels" in result.stderr


def test_importing_our_kernels_next_to_hub_kernels_fails_with_advice(tmp_path):
    fake = _fake_hub_kernels(tmp_path, with_package=False)
    result = _python("import kernels", [ROOT, fake])
    assert result.returncode != 0
    assert "clashes with the installed `kernels` distribution" in result.stderr
    assert "pip uninstall kernels" in result.stderr
    result = _python("from fusebench.namespace import check_kernels_namespace; check_kernels_namespace()",
                     [ROOT, fake])
    assert result.returncode != 0 and "both use the import name `kernels`" in result.stderr
