"""The CI gate of `fusebench inspect` over every shipped kernel configuration (issue: GPU readiness).

Every configuration that kernels/attention.py, spmm.py and gat.py ship (autotune lists and defaults)
must compile for sm_80 and sm_90 with no spills, and every attention configuration must use tensor
cores on sm_90. It runs as the CLI does, in a fresh process with TRITON_INTERPRET=0 (the test session
interprets kernels, and interpreted jit functions cannot be compiled); `--no-store` keeps CI's
compile results out of results/.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KERNEL_MODULES = ("attention", "spmm", "gat")


def test_every_shipped_kernel_configuration_passes_the_gate():
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
    result = subprocess.run(
        [sys.executable, "-m", "fusebench.cli", "inspect", "--check", "--no-store", "--json", "--targets", "80", "90"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "kernel gate passed" in result.stderr
    shipped = int(re.search(r"kernel gate passed: (\d+) shipped", result.stderr)[1])
    import json

    rows = json.loads(result.stdout)
    kernels = {row["kernel"].split(".")[0] for row in rows}
    assert set(KERNEL_MODULES) <= kernels, f"modules without compile specs: {set(KERNEL_MODULES) - kernels}"
    # One row per (config, gated target): a config ships to every target unless it names its targets
    # (kernels/attention.py keeps a few tiles to the target where they fit without spills).
    import importlib

    specs = [spec for name in KERNEL_MODULES for spec in importlib.import_module(f"kernels.{name}").compile_specs()]
    gated = (80, 90)
    per_target = [len(gated) if spec.targets is None else len(set(spec.targets) & set(gated)) for spec in specs]
    assert len(specs) == shipped and all(per_target), "a shipped config is compiled for no gated target"
    assert len(rows) == sum(per_target) and all(row["compiled"] and not row["spills"] for row in rows)
    # The matmul kernels of attention declare that they use tensor cores (fp32 IEEE products and the
    # small delta pre-pass do not); each of those must show HMMA or HGMMA in its sm_90 SASS.
    tensor_core_sm90 = [row for row in rows if row["kernel"].startswith("attention.") and row["target"] == "sm_90"
                        and row["expects_tensor_cores"]]
    assert tensor_core_sm90 and all(row["hmma"] + row["hgmma"] > 0 for row in tensor_core_sm90)
