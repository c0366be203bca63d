"""The results store: atomic appends, concurrent writers, crashed writers, corrupt and foreign files."""

import hashlib
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
    assert {p.path for p in read.problems} == {bad}  # a hand-made copy is also unverified, and repeats rows
    assert any(reason in p.reason for p in read.problems)
    assert len(read.frame) == 2  # the good file is still read, and the copy's good row is not counted twice
    with pytest.raises(StoreError, match=name):
        store.read(strict=True)


def test_a_directory_inside_the_table_is_reported(tmp_path):
    store = ResultsStore(tmp_path)
    (tmp_path / "runs" / "stray").mkdir(parents=True)
    assert "foreign file" in store.read().problems[0].reason


def test_an_empty_store_reads_as_an_empty_table(tmp_path):
    read = ResultsStore(tmp_path / "nothing").read(strict=True)
    assert read.frame.empty and list(read.frame.columns) == list(COLUMNS)


# ------------------------------------------------------------------------------------------------ issue 11 defects


def test_a_nan_cell_loses_only_its_row_and_is_reported_by_line(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(_rows("good", 2))
    bad = store.append(_rows("bad", 3, start=10.0))
    lines = bad.read_text().splitlines()
    p50 = COLUMNS.index("p50")
    cells = lines[2].split(",")
    cells[p50] = "nan"  # a time that is not a number: no figure
    edited = tmp_path / "runs" / "edited-by-hand.csv"
    edited.write_text("\n".join([lines[0], lines[1], ",".join(cells), lines[3]]) + "\n")
    bad.unlink()
    read = store.read()
    assert len(read.frame) == 4 and set(read.frame["run_id"]) == {"good", "bad"}
    assert read.frame["p50"].notna().all()
    reasons = [p.reason for p in read.problems if p.path == edited]
    assert any("line 3" in r and "p50" in r for r in reasons), reasons


def test_a_duplicated_file_is_reported_and_counted_once(tmp_path):
    store = ResultsStore(tmp_path)
    original = store.append(_rows("r", 3))
    copy = original.with_name("copy-" + original.name)
    copy.write_bytes(original.read_bytes())
    read = store.read()
    assert len(read.frame) == 3 and read.files == 1
    (problem,) = read.problems  # whichever of the two is read second
    assert problem.path in (original, copy) and "duplicate: the same rows as" in problem.reason


def test_a_file_cut_at_a_row_boundary_is_caught_by_its_row_count(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(_rows("kept", 1))
    cut = store.append(_rows("cut", 4))
    lines = cut.read_text().splitlines(keepends=True)
    cut.write_text("".join(lines[:3]))  # header + 2 of 4 rows: still ends with a newline
    read = store.read()
    assert set(read.frame["run_id"]) == {"kept"}
    assert [p.path for p in read.problems] == [cut] and "2 rows, its name says 4" in read.problems[0].reason


def test_a_file_edited_in_place_is_caught_by_its_checksum(tmp_path):
    store = ResultsStore(tmp_path)
    path = store.append(_rows("r", 2))
    path.write_text(path.read_text().replace(",1.5,", ",0.5,", 1))
    read = store.read()
    assert read.frame.empty and "checksum" in read.problems[0].reason


def test_a_run_id_with_a_slash_is_stored_and_read_back_unchanged(tmp_path):
    store = ResultsStore(tmp_path)
    path = store.append(_rows("team/a b:1", 2))
    assert path.parent == tmp_path / "runs"
    read = store.read(strict=True)
    assert set(read.frame["run_id"]) == {"team/a b:1"}


def test_a_live_writers_partial_file_is_not_a_problem(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    store.append(_rows("done", 1))
    # Stop a writer of this process between its write and its rename: the partial file is in flight.
    seen = {}

    def replace_then_look(src, dst):
        seen["read"] = ResultsStore(tmp_path).read()
        os.rename(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_look)
    store.append(_rows("live", 1))
    during = seen["read"]
    assert during.problems == [] and len(during.in_flight) == 1
    assert during.in_flight[0].name.endswith(PARTIAL_SUFFIX) and set(during.frame["run_id"]) == {"done"}


# ------------------------------------------------------------------------------------------ older schemas still read

# The header schemas 1 to 3 wrote, as in results/runs/ (schema 4 renamed x, the case's value on a plot's x axis,
# to axis_value); schema 1 ended before the timing provenance columns (gold, ...), schema 2 before the cluster's.
_SCHEMA_3_HEADER = ("schema,run_id,timestamp,suite,case,size,shape,x,provider,mode,dtype,metric,unit,p20,p50,p80,"
                    "samples,agreement,agrees,note,device_kind,device,compute_capability,driver,cuda,torch,triton,"
                    "harness,python,commit,dirty,host,cpu,gold,threads,load_before,load_after,flags,repeats,node,gpu")


def _write_as_an_old_writer(root: Path, schema: str, header: str, x_values: list[str]) -> Path:
    """A file as ResultsStore.append wrote it under ``schema``: its name carries the row count and checksum."""
    names = header.split(",")
    lines = [header]
    for i, x in enumerate(x_values):
        cells = dict.fromkeys(names, "") | {"schema": schema, "run_id": f"old-{schema}", "timestamp": "t",
                                            "suite": "attention", "case": f"case-{i}", "x": x, "provider": "triton",
                                            "mode": "forward", "metric": "time", "unit": "ms", "p50": "1.5"}
        lines.append(",".join(cells[name] for name in names))
    data = ("\n".join(lines) + "\n").encode()
    path = root / "runs" / f"old-vm-1-{'0' * 12}-n{len(x_values)}-{hashlib.sha256(data).hexdigest()[:16]}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("schema, header", [
    ("3", _SCHEMA_3_HEADER),
    ("1", _SCHEMA_3_HEADER[: _SCHEMA_3_HEADER.index(",gold")]),
])
def test_an_old_files_x_column_is_read_as_axis_value(tmp_path, schema, header):
    store = ResultsStore(tmp_path)
    _write_as_an_old_writer(tmp_path, schema, header, ["512", "4096"])
    store.append([{**row, "axis_value": 128} for row in _rows("new", 1)])  # beside a file of today's schema
    read = store.read(strict=True)  # no problem: the old file is valid results
    assert list(read.frame.columns) == list(COLUMNS) and "x" not in read.frame.columns
    by_run = read.frame.groupby("run_id")["axis_value"].apply(list).to_dict()
    assert by_run == {f"old-{schema}": [512.0, 4096.0], "new": [128.0]}
