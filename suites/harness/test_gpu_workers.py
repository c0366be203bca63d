"""`pytest -m gpu -n <GPUs>`: each xdist worker gets its own GPU (fusebench.cluster.gpu_of_worker, applied by
suites/conftest.py before anything initialises CUDA)."""

import os

import pytest

from fusebench.cluster import gpu_of_worker


def test_each_worker_gets_its_own_gpu_round_robin():
    assert [gpu_of_worker(f"gw{i}", None, 4) for i in range(4)] == ["0", "1", "2", "3"]
    assert [gpu_of_worker(f"gw{i}", None, 2) for i in range(4)] == ["0", "1", "0", "1"]  # more workers than GPUs


def test_the_visible_gpus_are_the_ones_shared_out():
    assert [gpu_of_worker(f"gw{i}", "4, 6,7", 8) for i in range(3)] == ["4", "6", "7"]
    assert gpu_of_worker("gw3", "GPU-aa,GPU-bb", 0) == "GPU-bb"  # UUIDs, as CUDA accepts them


@pytest.mark.parametrize("worker, visible, count", [
    (None, None, 4),  # not an xdist worker: the whole machine
    ("master", None, 4),
    ("gw1", "3", 8),  # already narrowed to one GPU: kept
    ("gw1", "", 8),  # no GPU visible
    ("gw1", None, 0),  # no GPU on the machine
    ("gw1", None, 1),  # one GPU: nothing to share out
])
def test_left_alone(worker, visible, count):
    assert gpu_of_worker(worker, visible, count) is None


def test_this_worker_was_narrowed_when_run_under_xdist():
    worker, visible = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("CUDA_VISIBLE_DEVICES")
    if worker is None or visible is None:
        pytest.skip("not a pytest-xdist worker with CUDA_VISIBLE_DEVICES set "
                    "(run with -n 2 and CUDA_VISIBLE_DEVICES=0,1)")
    assert "," not in visible, f"xdist worker {worker} still sees GPUs {visible!r}"
