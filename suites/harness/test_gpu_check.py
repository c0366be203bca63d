"""`fusebench gpu-check OUT` (fusebench/gpu_check.py) and tools/gpu-check-on-device.sh: the dry run from a fresh
checkout, verdicts, budgets, the plan, the summary and the one archive."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from fusebench import gpu_check
from fusebench.gpu_check import STEPS, Check, Failed, Skipped, exit_status, run
from fusebench.store import COLUMNS, ResultsStore

ROOT = Path(__file__).resolve().parents[2]
GPU_STEPS = {"inspect", "correctness", "ceilings", "benchmarks", "asv"}
# A sitecustomize.py that hides the optional packages, as on the lent GPU machine: with sys.modules[name] = None
# an import fails, as for a package that is not installed.
HIDE_OPTIONAL = 'import sys\nfor name in ("asv", "ray", "flash_attn"):\n    sys.modules[name] = None\n'


def _fresh_checkout(dest: Path) -> Path:
    """What a device call sends: the tracked and the untracked-not-ignored files, no .git, nothing installed."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def test_the_device_script_dry_runs_from_a_fresh_checkout_into_one_archive_and_a_summary(tmp_path):
    checkout = _fresh_checkout(tmp_path / "checkout")
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(HIDE_OPTIONAL)
    out = tmp_path / "out"
    # No CUDA even on a GPU machine; this python with asv, ray and flash-attn hidden; run as the device runs it.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(blocker), PYTHON=sys.executable, OUT=str(out))
    done = subprocess.run(["bash", "tools/gpu-check-on-device.sh"], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.startswith("fusebench gpu-check plan: ")
    for name, budget, _ in STEPS:  # the plan comes first, each step with its budget
        assert re.search(rf"^  \d\. {name} +{budget:.0f} s ", done.stdout, re.M), name
    assert "| asv | skipped |" in done.stdout

    # What comes back: one archive and the summary, within the device's limits on files.
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.tar.gz", "summary.md"]
    assert (out / "gpu-check.tar.gz").stat().st_size <= gpu_check.ARCHIVE_LIMIT
    summary_md = (out / "summary.md").read_text()
    assert "| correctness | skipped |" in summary_md and "In progress" not in summary_md
    with tarfile.open(out / "gpu-check.tar.gz") as tar:
        tar.extractall(tmp_path / "back", filter="data")
    back = tmp_path / "back" / "gpu-check"
    assert {"gpu-check.log", "summary.json", "environment.json", "roofline.txt"} <= {p.name for p in back.iterdir()}

    summary = json.loads((back / "summary.json").read_text())
    assert summary["cuda"] is False
    verdicts = {step["name"]: step for step in summary["steps"]}
    assert list(verdicts) == [name for name, _, _ in STEPS]
    for name in GPU_STEPS:
        assert verdicts[name]["status"] == "skipped" and "no CUDA device here" in verdicts[name]["detail"], name
    assert verdicts["environment"]["status"] == verdicts["roofline"]["status"] == "ok"
    optional = json.loads((back / "environment.json").read_text())["optional"]
    assert optional["asv"] is False and optional["flash_attn"] is False  # hidden in the check's own python too
    log = (back / "gpu-check.log").read_text()
    assert f"from {checkout.resolve()} " in log  # the fresh checkout ran, not an installed fusebench
    assert "dry run" in log and all(f"== {name}: " in log for name in verdicts)
    assert "H200 SXM us" in (back / "roofline.txt").read_text()


def test_the_budgets_and_the_script_fit_a_ten_minute_device_call():
    assert sum(budget for _, budget, _ in STEPS) <= gpu_check.TOTAL_BUDGET_S
    script = (ROOT / "tools" / "gpu-check-on-device.sh").read_text()
    kill_after, limit = map(int, re.search(r"timeout -k (\d+) (\d+) ", script).groups())
    # The check stops itself first; the script's backstop (TERM, then KILL) still ends inside the call.
    assert gpu_check.TOTAL_BUDGET_S + 60 <= limit and limit + kill_after < gpu_check.DEVICE_CALL_S == 600
    assert "timeout_s: 600" in script


def test_the_plan_lists_every_step_with_its_budget_and_runs_nothing(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fusebench", "gpu-check", str(tmp_path / "out"), "--plan"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == gpu_check.plan()
    assert not (tmp_path / "out").exists()


def test_summary_md_is_rewritten_after_every_step(tmp_path):
    def first(check, budget_s):
        return "first done"

    def second(check, budget_s):  # by now OUT/summary.md says how far the check got
        text = (tmp_path / "summary.md").read_text()
        assert "| first | ok |" in text and "In progress: second" in text
        return "second done"

    verdicts = run(tmp_path, steps=(("first", 1, first), ("second", 1, second)), cuda=False)
    assert [v.status for v in verdicts] == ["ok", "ok"], verdicts


def test_the_archive_leaves_out_the_largest_files_to_stay_under_the_limit(tmp_path):
    work = tmp_path / "work"
    (work / "results" / "runs").mkdir(parents=True)
    (work / "results" / "runs" / "rows.csv").write_bytes(os.urandom(20_000))  # random bytes do not compress
    (work / "big.bin").write_bytes(os.urandom(60_000))
    (work / "summary.json").write_text("{}")
    packed, left_out = gpu_check.pack(work, tmp_path / "a.tar.gz", limit=40_000)
    assert left_out == ["big.bin"] and sorted(packed) == ["results/runs/rows.csv", "summary.json"]
    assert (tmp_path / "a.tar.gz").stat().st_size <= 40_000
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["gpu-check/results/runs/rows.csv", "gpu-check/summary.json"]


def test_sigterm_stops_the_check_and_still_packs_out(tmp_path):
    code = ("import sys, time\nfrom fusebench import gpu_check\n"
            "def hangs(check, budget_s):\n    print('started', flush=True)\n    time.sleep(60)\n"
            "gpu_check.run(sys.argv[1], steps=(('hangs', 60, hangs), ('after', 1, lambda c, b: 'ran')), cuda=False)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "started"
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=60)
    text = (tmp_path / "summary.md").read_text()
    assert "| hangs | failed |" in text and "stopped by signal" in text and "| after |" not in text
    assert (tmp_path / "gpu-check.tar.gz").is_file()


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
