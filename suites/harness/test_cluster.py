"""fusebench.cluster: the run's plan as Ray tasks on a local Ray of two fake nodes, each with two logical
GPUs of a made-up type (FAKE-A, FAKE-B); the rows stored must be an in-process run's rows.

Faults are injected by providers that kill their own worker (once, or always) or press Ctrl-C on the driver.
"""

import os
import signal
import sys
import time

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'fusebench[cluster]' (.ci/setup does)")

from ray.cluster_utils import Cluster  # noqa: E402

from fusebench import cluster, runner  # noqa: E402
from fusebench.device import identity  # noqa: E402
from fusebench.providers import Provider, providers  # noqa: E402
from fusebench.store import ResultsStore  # noqa: E402

CASE = "bert-base-128"  # the CPU variant: one sequence of 32 tokens, 4 heads of 64
GOOD = ["reference", "sdpa-math"]
MODES = ("forward", "backward")
KEY = ["case", "provider", "mode", "dtype", "metric"]


@pytest.fixture(scope="module")
def fleet():
    """Two nodes, one CPU and two logical GPUs each, of two made-up accelerator types."""
    if ray.is_initialized():
        ray.shutdown()
    fake = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 2, "resources": {"accelerator_type:FAKE-A": 2}, "include_dashboard": False})
    fake.add_node(num_cpus=1, num_gpus=2, resources={"accelerator_type:FAKE-B": 2})
    # The fault providers are defined here: workers unpickle them by value, not by importing this test file.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address=fake.address, include_dashboard=False, log_to_driver=False)
    nodes = {n["NodeID"][:8]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    yield nodes
    ray.shutdown()
    fake.shutdown()


def _reference_build(case, wl):
    return next(p for p in providers("attention") if p.name == "reference").build(case, wl)


def _dies_once(marker: str) -> Provider:
    def build(case, wl):
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker process dies, as on an OOM kill or a lost node
        return _reference_build(case, wl)
    return Provider("dies-once", "attention", "kills its worker on the first attempt", build)


def _always_dies() -> Provider:
    def build(case, wl):
        os._exit(1)
    return Provider("always-dies", "attention", "kills every worker it meets", build)


def _interrupts_once(marker: str, driver_pid: int, store: ResultsStore) -> Provider:
    def build(case, wl):
        if not os.path.exists(marker):
            open(marker, "w").close()
            # Ray does not promise the plan's order: wait until the driver has stored some rows, so that the
            # interrupted run has rows to keep, then press Ctrl-C on it, mid-run
            deadline = time.monotonic() + 60
            while not list(store.table_dir.glob("*.csv")) and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(driver_pid, signal.SIGINT)
        return _reference_build(case, wl)
    return Provider("interrupts-once", "attention", "presses Ctrl-C on the driver once", build)


def _in_process(tmp_path):
    store = ResultsStore(tmp_path / "in-process")
    runner.run(suites=("attention",), case_names=[CASE], provider_names=GOOD, modes=MODES, ident=identity(),
               store=store, repeats=1)
    return store.read(strict=True).frame


def _keys_and_verdicts(frame):
    return sorted(map(tuple, frame[KEY + ["agrees"]].astype(str).values.tolist()))


def _run(store, **kw):
    return cluster.run("ignored: the fixture's Ray is used", suites=("attention",), case_names=[CASE], modes=MODES,
                       store=store, repeats=1, progress=False, max_retries=1, **kw)


def test_cluster_rows_equal_in_process_rows_each_naming_its_node_and_gpu(fleet, tmp_path):
    expected = _in_process(tmp_path)
    store = ResultsStore(tmp_path / "cluster")
    report = _run(store, provider_names=GOOD)
    assert not report.failed and not report.interrupted
    got = store.read(strict=True).frame
    assert _keys_and_verdicts(got) == _keys_and_verdicts(expected)
    assert set(got["run_id"]) == {report.run.run_id}
    for node, gpu in got[["node", "gpu"]].itertuples(index=False):
        assert node.split("/")[1] in fleet, f"row names {node!r}, not a node of the cluster"
        assert gpu in ("0", "1"), f"row names logical GPU {gpu!r}; each node has GPUs 0 and 1"
    assert got["device_kind"].eq("cpu").all()  # the nodes' identity: CPU machines declaring logical GPUs


def test_gpu_type_sends_every_task_to_that_type(fleet, tmp_path):
    store = ResultsStore(tmp_path)
    report = _run(store, provider_names=["reference"], gpu_type="FAKE-B")
    assert not report.failed
    rows = store.read(strict=True).frame
    b_nodes = {n for n, res in fleet.items() if "accelerator_type:FAKE-B" in res}
    assert len(rows) > 0 and {n.split("/")[1] for n in rows["node"]} == b_nodes


def test_a_killed_worker_is_retried_and_a_hopeless_task_is_reported(fleet, tmp_path):
    store = ResultsStore(tmp_path / "cluster")
    dies_once = _dies_once(str(tmp_path / "died"))
    report = _run(store, provider_names=GOOD + ["dies-once", "always-dies"],
                  extra_providers=(dies_once, _always_dies()))
    assert (tmp_path / "died").exists()  # the first attempt did die
    failed = {(t.provider, t.mode) for t, _ in report.failed}
    assert failed == {("always-dies", m) for m in MODES}
    assert all("died" in error.lower() or "crash" in error.lower() for _, error in report.failed), report.failed
    rows = store.read(strict=True).frame
    assert not rows.duplicated(KEY).any()
    retried = rows[rows["provider"] == "dies-once"]
    assert sorted(retried["mode"].unique()) == sorted(MODES) and retried["agrees"].all()
    good = rows[rows["provider"].isin(GOOD)]
    assert _keys_and_verdicts(good) == _keys_and_verdicts(_in_process(tmp_path))


def test_an_interrupted_run_keeps_its_rows_and_resume_runs_only_what_is_missing(fleet, tmp_path):
    store = ResultsStore(tmp_path / "cluster")
    interrupts = _interrupts_once(str(tmp_path / "pressed"), os.getpid(), store)
    names = GOOD + ["interrupts-once"]
    first = _run(store, provider_names=names, extra_providers=(interrupts,))
    assert first.interrupted
    kept = store.read(strict=True).frame
    assert len(kept) > 0
    second = _run(store, provider_names=names, extra_providers=(interrupts,), resume=first.run.run_id)
    assert not second.interrupted and not second.failed
    done_before = len(kept[["provider", "mode"]].drop_duplicates())
    assert second.skipped == done_before
    assert sum(second.per_node.values()) == second.planned - done_before  # only what was missing ran
    rows = store.read(strict=True).frame
    assert set(rows["run_id"]) == {first.run.run_id}
    assert not rows.duplicated(KEY).any()
    assert len(rows.merge(kept)) == len(kept)  # every row kept from the interrupted run is still there
    good = rows[rows["provider"].isin(GOOD)]
    assert _keys_and_verdicts(good) == _keys_and_verdicts(_in_process(tmp_path))
    assert sorted(rows[rows["provider"] == "interrupts-once"]["mode"].unique()) == sorted(MODES)
