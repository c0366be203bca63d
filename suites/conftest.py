"""Shared pytest set-up for every suite.

* The Triton CPU interpreter is the default (TRITON_INTERPRET=1) unless the environment says
  otherwise; the `gpu` tier runs with TRITON_INTERPRET=0 (tox -e gpu). It must be set before any
  kernel module is imported, which is why it happens here, at conftest import.
* Every run draws a fresh base seed, printed in the header; FUSEBENCH_SEED=<n> replays a run.
  The `seed` fixture derives a per-test seed from it and the test's id.
* Tests marked `gpu` are skipped, with the reason, where CUDA is absent.
* torch uses one CPU thread: the tests run many tiny ops, for which thread hand-offs cost more than
  they save (measured: tiny-model tests ran up to 30x slower on 2 threads on a busy 2-core machine).
  Set FUSEBENCH_TEST_THREADS to change it.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

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
    if item.get_closest_marker("gpu") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("gpu tier: no CUDA device on this machine")
        if os.environ.get("TRITON_INTERPRET") == "1":
            pytest.skip("gpu tier: TRITON_INTERPRET=1 would emulate the kernels; run with TRITON_INTERPRET=0")
