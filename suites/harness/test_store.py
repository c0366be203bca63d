"""The results store: atomic appends, concurrent writers, crashed writers, corrupt and foreign files."""

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusebench.store import COLUMNS, PARTIAL_SUFFIX, ResultsStore, StoreError

ROOT = Path(__file__).resolve().parents[2]


def _rows(run_id: str, n: int, start: float = 1.0) -> list[dict]:
    return [{"run_id": run_id, "timestamp": "2026-01-01T00:00:00Z", "suite": "attention", "case": f"case-{i}",
             "provider": "reference", "mode": "forward", "metric": "time", "unit": "ms", "p20": start + i,
             "p50": start + i + 0.5, "p80": start + i + 1, "agreement": 0.25, "agrees": True, "dirty": False,
             "note": 'a "quoted", comma note'} for i in range(n)]


def test_append_then_read_round_trips_every_column(tmp_path):
    store = ResultsStore(tmp_path)
    path = store.append(_rows("run-a", 3))
    read = store.read(strict=True)
    assert path.parent == tmp_path / "runs" and path.suffix == ".csv"
    assert list(read.frame.columns) == list(COLUMNS)
    assert sorted(read.frame["case"]) == ["case-0", "case-1", "case-2"]
    assert read.frame["p50"].tolist() == [1.5, 2.5, 3.5]
    assert read.frame["agrees"].tolist() == [True, True, True]
    assert read.frame["note"].iloc[0] == 'a "quoted", comma note'
    assert read.problems == [] and read.files == 1


def test_append_rejects_unknown_and_missing_columns(tmp_path):
    store = ResultsStore(tmp_path)
    with pytest.raises(ValueError, match=r"columns the store does not know: \['colour'\]"):
        store.append([{**_rows("r", 1)[0], "colour": "red"}])
    incomplete = _rows("r", 1)[0]
    del incomplete["p50"]
    with pytest.raises(ValueError, match=r"lacks required columns \['p50'\]"):
        store.append([incomplete])
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _writer(root: str, worker: int, appends: int) -> None:
    store = ResultsStore(root)
    for k in range(appends):
        store.append(_rows(f"w{worker}-{k}", 5, start=worker * 1000 + k))


def test_concurrent_writers_lose_nothing(tmp_path):
    workers, appends = 4, 15
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(str(tmp_path), w, appends)) for w in range(workers)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
        assert p.exitcode == 0
    frame = ResultsStore(tmp_path).read(strict=True).frame
    assert len(frame) == workers * appends * 5
    assert frame["run_id"].nunique() == workers * appends
    assert not frame.duplicated(["run_id", "case"]).any()


def test_a_writer_killed_mid_append_loses_only_its_own_rows(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(_rows("before", 4))
    # The child dies at fsync, after writing its rows and before the rename that would publish them.
    crash = (
        "import os, sys; sys.path.insert(0, sys.argv[2]);"
        "from fusebench.store import ResultsStore;"
        "os.fsync = lambda fd: os._exit(7);"
        "ResultsStore(sys.argv[1]).append([{'run_id': 'crashed', 'timestamp': 't', 'suite': 's', 'case': 'c',"
        " 'provider': 'p', 'mode': 'forward', 'metric': 'time', 'unit': 'ms', 'p50': 1.0}])"
    )
    result = subprocess.run([sys.executable, "-c", crash, str(tmp_path), str(ROOT)], timeout=60)
    assert result.returncode == 7
    read = store.read()
    assert sorted(read.frame["run_id"].unique()) == ["before"] and len(read.frame) == 4
    assert len(read.problems) == 1
    assert read.problems[0].path.name.endswith(PARTIAL_SUFFIX)
    assert "incomplete write" in read.problems[0].reason
    with pytest.raises(StoreError, match="incomplete write"):
        store.read(strict=True)


def test_an_exception_mid_append_leaves_no_partial_file(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        store.append(_rows("r", 2))
    monkeypatch.undo()
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize("name, content, reason", [
    ("truncated.csv", None, "truncated"),  # filled below: a valid file cut mid-row
    ("wrong-fields.csv", "HEADER\n1,2,3\n", "has 3 fields"),
    ("not-a-number.csv", None, "column p50 is not a number"),
    ("foreign.csv", "name,score\nalice,3\n", "foreign file: its header"),
    ("notes.txt", "hello\n", "foreign file: not a results CSV"),
])
def test_corrupt_and_foreign_files_are_reported_with_their_path(tmp_path, name, content, reason):
    store = ResultsStore(tmp_path)
    good = store.append(_rows("good", 2))
    text = good.read_text()
    header = text.splitlines()[0]
    if name == "truncated.csv":
        content = text[: len(text) - 7]
    elif name == "not-a-number.csv":
        content = text.replace(",2.5,", ",fast,", 1)
    content = content.replace("HEADER", header)
    bad = tmp_path / "runs" / name
    bad.write_text(content)
    read = store.read()
    assert [p.path for p in read.problems] == [bad]
    assert reason in read.problems[0].reason
    assert len(read.frame) == 2  # the good file is still read
    with pytest.raises(StoreError, match=name):
        store.read(strict=True)


def test_a_directory_inside_the_table_is_reported(tmp_path):
    store = ResultsStore(tmp_path)
    (tmp_path / "runs" / "stray").mkdir(parents=True)
    assert "foreign file" in store.read().problems[0].reason


def test_an_empty_store_reads_as_an_empty_table(tmp_path):
    read = ResultsStore(tmp_path / "nothing").read(strict=True)
    assert read.frame.empty and list(read.frame.columns) == list(COLUMNS)
