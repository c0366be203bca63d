"""The CI gate of `fusebench inspect` over every row it compiles (issue: GPU readiness).

A row is one shipped configuration (the autotune lists and defaults of kernels/attention.py, spmm.py
and gat.py) compiled with one specialization that the case catalog's launches give it
(fusebench/specializations.py). Every row must compile for sm_80 and sm_90 with no spills, and every
attention row must use tensor cores on sm_90; every specialization a launch gives a configuration must
have its row. It runs as the CLI does, in a fresh process with TRITON_INTERPRET=0 (the test session
interprets kernels, and interpreted jit functions cannot be compiled); `--no-store` keeps CI's compile
results out of results/.

It is marked ``slow`` (outside the default run) and .ci/run runs it before the README's test command, so
CI still gates on it: recording the catalog's launches (GPU-size graphs) and compiling every row for two
targets costs far more than the default run's budget on CI's 2 cores. The launch rule, the rows it decides
and compiling a row stay in the default run (test_specializations.py, test_inspect.py).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNEL_MODULES = ("attention", "spmm", "gat")


@pytest.mark.slow
def test_every_specialization_the_catalog_launches_passes_the_gate():
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
    result = subprocess.run(
        [sys.executable, "-m", "fusebench.cli", "inspect", "--check", "--no-store", "--json", "--targets", "80", "90"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "kernel gate passed" in result.stderr and "for sm_80, sm_90 without spills" in result.stderr
    shipped = int(re.search(r"kernel gate passed: (\d+) shipped", result.stderr)[1])
    rows = json.loads(result.stdout)
    kernels = {row["kernel"].split(".")[0] for row in rows}
    assert set(KERNEL_MODULES) <= kernels, f"modules without compile specs: {set(KERNEL_MODULES) - kernels}"
    # One row per (configuration specialization, gated target): a configuration ships to every target unless it
    # names its targets (kernels/attention.py keeps a few tiles to the target where they fit without spills).
    gated = {80, 90}
    per_target = [len(gated) if spec.targets is None else len(set(spec.targets) & gated) for spec in _specialized()]
    assert len(per_target) == shipped and all(per_target), "a shipped configuration is compiled for no gated target"
    assert len(rows) == sum(per_target) and all(row["compiled"] and not row["spills"] for row in rows)
    # The matmul kernels of attention declare that they use tensor cores (fp32 IEEE products and the
    # small delta pre-pass do not); each of those must show HMMA or HGMMA in its sm_90 SASS.
    tensor_core_sm90 = [row for row in rows if row["kernel"].startswith("attention.") and row["target"] == "sm_90"
                        and row["expects_tensor_cores"]]
    assert tensor_core_sm90 and all(row["hmma"] + row["hgmma"] > 0 for row in tensor_core_sm90)
    _every_served_specialization_has_a_row(rows)


def _specialized():
    """The rows `fusebench inspect` should compile: each shipped configuration with each specialization the
    catalog's launches give it (the launches are recorded once per sources and cached, see specializations.py)."""
    from fusebench.inspect import catalog_specs

    return catalog_specs(list(KERNEL_MODULES))[0]


def _every_served_specialization_has_a_row(rows):
    """For each shipped configuration and each catalog launch it serves, the report has that configuration
    compiled with that launch's specialization, on each gated target it ships to, and the row names the
    launch's case."""
    from fusebench.inspect import shipped_specs
    from fusebench.specializations import catalog_launches

    reported = {}
    for row in rows:
        reported.setdefault((row["kernel"], row["config"], row["specialization"]), set()).add(row["target"])
    cases = {(row["kernel"], row["config"], row["specialization"]): row["cases"].split(", ") for row in rows}
    launches = catalog_launches()
    missing = []
    for spec in shipped_specs(list(KERNEL_MODULES)):
        for launch in launches:
            if spec.serves(launch):
                key = (spec.kernel, spec.config, spec.for_launch(launch).specialization)
                targets = {f"sm_{t}" for t in (80, 90) if spec.targets is None or t in spec.targets}
                if reported.get(key) != targets or not set(launch.case.split(", ")) <= set(cases[key]):
                    missing.append(f"{key} for {launch.case}")
    assert not missing, f"{len(missing)} specializations without their row: {missing[:5]}"
    # The example: the segment-sum tile at F = 128 (a catalog case) and F = 602 (the correctness
    # tier's ragged width) are two rows, and only the aligned one loads 128 bits at a time.
    segment = {row["cases"]: row for row in rows if row["kernel"] == "spmm.segment_sum" and row["target"] == "sm_90"
               and row["config"] == "fp16 i64 E16 F128 w4"}
    aligned = next(row for cases, row in segment.items() if "sum/arxiv-like@gpu" in cases.split(", "))
    ragged = next(row for cases, row in segment.items() if "correctness sum F602 int64" in cases.split(", "))
    assert aligned["specialization"] != ragged["specialization"]
    assert aligned["global_loads_128"] > ragged["global_loads_128"]
