"""Shared pytest set-up for every suite.

* The Triton CPU interpreter is the default (TRITON_INTERPRET=1) unless the environment says
  otherwise; the `gpu` tier runs with TRITON_INTERPRET=0 (tox -e gpu). It must be set before any
  kernel module is imported, which is why it happens here, at conftest import.
* Every run draws a fresh base seed, printed in the header; FUSEBENCH_SEED=<n> replays a run.
  The `seed` fixture derives a per-test seed from it and the test's id.
* Tests marked `gpu` are skipped, with the reason, where CUDA is absent.
* The coverage map (fusebench/coverage.py) is recorded here: the seams' backend registries note which
  documented module ran with which backend in which test; xdist workers hand their notes to the controller
  (``workeroutput``), and a complete run (the README's test command: no paths, no -k, the default -m)
  writes results/coverage/seams.json and applies `fusebench list --check`'s rule, failing the run when a
  section with a kernel seam was never run with its kernel. Partial runs record nothing: a map from a
  subset of the tests would claim less (or, merged, more) than the suite runs.
* `pytest -m gpu -n <GPUs>`: each pytest-xdist worker gets its own GPU (CUDA_VISIBLE_DEVICES set from the
  worker id, round-robin over the visible GPUs), unless the variable already names a single GPU.
* torch uses one CPU thread: the tests run many tiny ops, for which thread hand-offs cost more than
  they save, and on a busy machine spinning threads slow every small op. Set FUSEBENCH_TEST_THREADS to change it.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
# Importing the asv suites lists the inspect rows, which records the catalog's launches first: outside the
# default run's budget, and the tests read the classes' shape only (suites/asv/_inspect.spec_modules).
os.environ.setdefault("FUSEBENCH_INSPECT_LIST", "cached")



def _one_gpu_per_worker() -> None:
    """Before anything initialises CUDA: narrow this xdist worker to one GPU (fusebench.cluster.gpu_of_worker)."""
    import shutil
    import subprocess

    from fusebench.cluster import gpu_of_worker

    worker, visible = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("CUDA_VISIBLE_DEVICES")
    if not worker or (visible is not None and "," not in visible):
        return
    count = 0
    if visible is None and shutil.which("nvidia-smi"):  # counting through torch would initialise CUDA here
        try:
            listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=20)
            count = sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))
        except (subprocess.SubprocessError, OSError):
            count = 0
    gpu = gpu_of_worker(worker, visible, count)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


_one_gpu_per_worker()

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("FUSEBENCH_TEST_THREADS", "1")))

from fusebench.inputs import run_seed, seed_for  # noqa: E402

# One seed for the whole run, pytest-xdist workers included (they inherit this environment), so that the
# seed in the header replays every test of the run.
os.environ.setdefault("FUSEBENCH_SEED", str(run_seed()))


def pytest_report_header(config):
    interpret = os.environ["TRITON_INTERPRET"]
    return [f"fusebench: FUSEBENCH_SEED={run_seed()} (set it to replay); TRITON_INTERPRET={interpret}"]


@pytest.fixture
def seed(request) -> int:
    """A fresh seed per test and run, reproducible with FUSEBENCH_SEED."""
    return seed_for(request.node.nodeid)


def pytest_runtest_setup(item):
    item.config._fusebench_recorder.current_test = item.nodeid  # seam calls from here on are this test's
    if item.get_closest_marker("gpu") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("gpu tier: no CUDA device on this machine")
        if os.environ.get("TRITON_INTERPRET") == "1":
            pytest.skip("gpu tier: TRITON_INTERPRET=1 would emulate the kernels; run with TRITON_INTERPRET=0")


# --------------------------------------------------------------------------------------------------
# The coverage map: what the seams ran
# --------------------------------------------------------------------------------------------------

_SEAMS_KEY = "fusebench_seams"


def pytest_configure(config):
    from fusebench.coverage import SeamRecorder

    config._fusebench_recorder = SeamRecorder().install()
    config._fusebench_worker_parts = []


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent with -p no:xdist
def pytest_testnodedown(node, error):  # controller: a pytest-xdist worker finished, with its notes
    part = getattr(node, "workeroutput", {}).get(_SEAMS_KEY)
    if part is not None:
        node.config._fusebench_worker_parts.append(part)


def _default_markexpr(config) -> str:
    """The -m of pyproject's addopts: the README's test command runs with exactly this selection."""
    words = list(config.getini("addopts"))  # already split like a shell would
    return words[words.index("-m") + 1] if "-m" in words else ""


def _complete_run(session, exitstatus) -> bool:
    """The README's test command: no paths (testpaths), no -k, the default -m, not stopped early."""
    config = session.config
    return (config.args_source == pytest.Config.ArgsSource.TESTPATHS and not config.option.keyword
            and (config.option.markexpr or "") == _default_markexpr(config) and not session.shouldstop
            and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    config = session.config
    recorder = getattr(config, "_fusebench_recorder", None)
    if recorder is None:
        return
    if hasattr(config, "workerinput"):  # an xdist worker: hand the notes to the controller
        config.workeroutput[_SEAMS_KEY] = {**recorder.as_json(), "collected": session.testscollected}
        return
    if not _complete_run(session, exitstatus):
        return
    from fusebench import coverage

    parts = config._fusebench_worker_parts or [{**recorder.as_json(), "collected": session.testscollected}]
    recording = coverage.merge(parts)
    tests = max(part["collected"] for part in parts)  # every xdist worker collects the whole suite
    scope = {"tests": tests, "markexpr": config.option.markexpr, "workers": len(parts)}
    path = coverage.write_recording(recording, scope)
    problems = coverage.check({**recording, "scope": scope})
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"fusebench: coverage map recorded in {path.relative_to(coverage.ROOT)} "
                            f"(`fusebench list` shows it)")
        for problem in problems:
            reporter.write_line(f"fusebench list --check: {problem}", red=True)
    if problems and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
