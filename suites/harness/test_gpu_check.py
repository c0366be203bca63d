"""`fusebench gpu-check OUT` (fusebench/gpu_check.py): the CPU dry run, verdicts, budgets and the summary."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusebench import gpu_check
from fusebench.gpu_check import STEPS, Check, Failed, Skipped, exit_status, run
from fusebench.store import COLUMNS, ResultsStore

ROOT = Path(__file__).resolve().parents[2]
GPU_STEPS = {"inspect", "correctness", "ceilings", "benchmarks", "asv"}


def test_the_dry_run_skips_every_gpu_step_saying_why_and_still_writes_out(tmp_path):
    out = tmp_path / "check"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))  # no CUDA, even on a GPU machine
    done = subprocess.run([sys.executable, "-m", "fusebench.cli", "gpu-check", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"gpu-check.log", "summary.md", "summary.json", "environment.json", "roofline.txt"} <= {
        p.name for p in out.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cuda"] is False
    verdicts = {step["name"]: step for step in summary["steps"]}
    assert list(verdicts) == [name for name, _, _ in STEPS]
    for name in GPU_STEPS:
        assert verdicts[name]["status"] == "skipped" and "no CUDA device here" in verdicts[name]["detail"], name
    assert verdicts["environment"]["status"] == verdicts["roofline"]["status"] == "ok"
    log = (out / "gpu-check.log").read_text()
    assert "dry run" in log and all(f"== {name}: " in log for name in verdicts)
    assert "| correctness | skipped |" in (out / "summary.md").read_text()
    assert "H200 SXM us" in (out / "roofline.txt").read_text()
    assert "| asv | skipped |" in done.stdout


def test_the_budgets_fit_in_eight_minutes():
    assert sum(budget for _, budget, _ in STEPS) <= gpu_check.TOTAL_BUDGET_S < 8 * 60


def test_a_failed_step_fails_the_check_and_the_others_still_run(tmp_path):
    def fails(check, budget_s):
        raise Failed("3 tests failed")

    def crashes(check, budget_s):
        raise ZeroDivisionError("division by zero")

    def skips(check, budget_s):
        raise Skipped("asv is not installed")

    steps = (("a", 1, fails), ("b", 1, crashes), ("c", 1, skips), ("d", 1, lambda check, budget_s: "fine"))
    verdicts = run(tmp_path, steps=steps, cuda=False)
    assert [(v.name, v.status) for v in verdicts] == [("a", "failed"), ("b", "failed"), ("c", "skipped"), ("d", "ok")]
    assert verdicts[1].detail == "ZeroDivisionError: division by zero"
    assert exit_status(verdicts) == 1
    assert exit_status(verdicts[2:]) == 0  # skipped steps do not fail the check


def test_a_step_over_its_budget_is_stopped_and_failed(tmp_path):
    import time

    check = Check(tmp_path, cuda=False, deadline=time.monotonic() + 60)
    with pytest.raises(Failed, match="over its time budget"):
        check.command([sys.executable, "-c", "import time; time.sleep(30)"], budget_s=1)
    assert "timeout 1 s" in (tmp_path / "gpu-check.log").read_text()


def test_the_roofline_step_puts_measured_times_over_their_bound(tmp_path):
    # bert-base-512 forward in bf16 on an H200: bound 6.51 us (6.44 GFLOP at 989.4 TFLOP/s); 13.02 us is 2.00x.
    measured_ms = 2 * (4 * 8 * 12 * 512 * 512 * 64) / 989.4e12 * 1e3
    row = dict.fromkeys(COLUMNS)
    row.update(run_id="r", timestamp="2026-01-01T00:00:00Z", suite="attention", case="bert-base-512", size="gpu",
               provider="sdpa-flash", mode="forward", dtype="bfloat16", metric="time", unit="ms", p50=measured_ms,
               device="NVIDIA H200", device_kind="cuda")
    check = Check(tmp_path, cuda=False)
    ResultsStore(check.results).append([row])
    assert "1 measured time(s)" in gpu_check.step_roofline(check, 15)
    text = (tmp_path / "roofline.txt").read_text()
    assert "bert-base-512" in text and "sdpa-flash" in text and "2.00x" in text
