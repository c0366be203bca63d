"""The results store: one long table of measurements under ``results/runs/``.

One row per (case, provider, mode, metric) with its unit, quantiles (p20, p50, p80), the agreement
ratio of the result it measured, the device identity, the software versions, the commit and a
timestamp (:data:`COLUMNS`). pandas reads it back (:meth:`ResultsStore.read`).

Appends are atomic at file granularity. Each :meth:`ResultsStore.append` writes its rows to a new CSV
file under a hidden temporary name, fsyncs it, renames it to its final, unique name (run id, host,
process, random suffix) and fsyncs the directory. So:

* a crash mid-write leaves at most a hidden ``.*.partial`` file; nothing already stored is touched;
* two writers at once never write the same file, so neither loses rows;
* a reader sees a file either complete or not at all.

Reading never skips a file silently: a partial write, a file that is not a results CSV (a foreign
file), or a CSV whose header, row lengths or numbers are wrong (a corrupt file) is reported with its
path (:class:`StoreProblem`); ``strict=True`` raises :class:`StoreError` listing them all.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["COLUMNS", "SCHEMA", "ResultsStore", "StoreProblem", "StoreError", "StoreRead", "new_run_id",
           "default_root"]

SCHEMA = "1"
COLUMNS: tuple[str, ...] = (
    "schema", "run_id", "timestamp",  # which run wrote the row, and when (UTC, ISO 8601)
    "suite", "case", "size", "shape", "x",  # the workload; x is the plotted parameter (seq length, degree)
    "provider", "mode", "dtype",
    "metric", "unit", "p20", "p50", "p80", "samples",  # the measurement
    "agreement", "agrees", "note",  # the ratio error/allowed of the result measured; notes (interpreted, ...)
    "device_kind", "device", "compute_capability", "driver", "cuda", "torch", "triton", "harness", "python",
    "commit", "dirty", "host", "cpu",
)
_NUMERIC = ("x", "p20", "p50", "p80", "samples", "agreement")
_REQUIRED = ("schema", "run_id", "timestamp", "suite", "case", "provider", "mode", "metric", "unit", "p50")
_BOOLEAN = ("agrees", "dirty")
PARTIAL_SUFFIX = ".partial"


def default_root() -> Path:
    """``$FUSEBENCH_RESULTS`` or the repository's ``results/``."""
    env = os.environ.get("FUSEBENCH_RESULTS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "results"


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class StoreProblem:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class StoreError(RuntimeError):
    """The store holds files that are not valid results; the message lists each with its path."""

    def __init__(self, problems: list[StoreProblem]):
        self.problems = problems
        super().__init__("results store problems:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass
class StoreRead:
    frame: object  # pandas.DataFrame with COLUMNS
    problems: list[StoreProblem] = field(default_factory=list)
    files: int = 0


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


class ResultsStore:
    """The long table under ``root/runs``. ``root`` defaults to :func:`default_root`."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.table_dir = self.root / "runs"

    # ---------------------------------------------------------------------------------------------- writing

    def append(self, rows: Iterable[Mapping]) -> Path | None:
        """Store ``rows`` atomically in a new file; returns its path (None when there are no rows)."""
        rows = list(rows)
        if not rows:
            return None
        for i, row in enumerate(rows):
            unknown = set(row) - set(COLUMNS)
            if unknown:
                raise ValueError(f"rows[{i}] has columns the store does not know: {sorted(unknown)}")
            missing = [c for c in _REQUIRED if c != "schema" and _format(row.get(c)) == ""]
            if missing:
                raise ValueError(f"rows[{i}] lacks required columns {missing}")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([SCHEMA if c == "schema" else _format(row.get(c)) for c in COLUMNS])
        data = buffer.getvalue().encode()

        self.table_dir.mkdir(parents=True, exist_ok=True)
        run_id = str(rows[0]["run_id"])
        name = f"{run_id}-{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:12]}.csv"
        final = self.table_dir / name
        partial = self.table_dir / f".{name}{PARTIAL_SUFFIX}"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            partial.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(partial, final)  # atomic: readers see the whole file or nothing
        dir_fd = os.open(self.table_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
        return final

    # ---------------------------------------------------------------------------------------------- reading

    def read(self, *, strict: bool = False) -> StoreRead:
        """Every stored row as a DataFrame, and every file that is not a valid results file.

        ``strict``: raise :class:`StoreError` instead of returning problems.
        """
        import pandas as pd

        problems: list[StoreProblem] = []
        records: list[dict] = []
        files = 0
        entries = sorted(self.table_dir.iterdir()) if self.table_dir.is_dir() else []
        for path in entries:
            if path.name.endswith(PARTIAL_SUFFIX):
                problems.append(StoreProblem(path, "incomplete write: a writer crashed mid-append or is writing now"))
                continue
            if not path.is_file() or path.suffix != ".csv":
                problems.append(StoreProblem(path, "foreign file: not a results CSV (expected *.csv rows)"))
                continue
            file_records, problem = _parse(path)
            if problem is not None:
                problems.append(problem)
                continue
            files += 1
            records.extend(file_records)
        if strict and problems:
            raise StoreError(problems)
        frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
        for column in _NUMERIC:
            frame[column] = pd.to_numeric(frame[column])
        for column in _BOOLEAN:
            frame[column] = frame[column].map({"True": True, "False": False, "": None})
        return StoreRead(frame, problems, files)


def _parse(path: Path) -> tuple[list[dict], StoreProblem | None]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        return [], StoreProblem(path, f"corrupt: cannot be read as text ({error})")
    if not text.endswith("\n"):
        return [], StoreProblem(path, "corrupt: truncated (the last row does not end with a newline)")
    try:
        lines = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        return [], StoreProblem(path, f"corrupt: not valid CSV ({error})")
    if not lines or tuple(lines[0]) != COLUMNS:
        head = ",".join(lines[0])[:80] if lines else ""
        return [], StoreProblem(path, f"foreign file: its header is not the results schema (starts {head!r})")
    records = []
    for number, values in enumerate(lines[1:], start=2):
        if len(values) != len(COLUMNS):
            return [], StoreProblem(path, f"corrupt: line {number} has {len(values)} fields, expected {len(COLUMNS)}")
        record = dict(zip(COLUMNS, values, strict=True))
        if record["schema"] != SCHEMA:
            return [], StoreProblem(path, f"corrupt: line {number} has schema {record['schema']!r}, expected {SCHEMA}")
        for column in _REQUIRED:
            if record[column] == "":
                return [], StoreProblem(path, f"corrupt: line {number} has no {column}")
        for column in _NUMERIC:
            if record[column] != "":
                try:
                    float(record[column])
                except ValueError:
                    return [], StoreProblem(path, f"corrupt: line {number} column {column} is not a number "
                                                  f"({record[column]!r})")
        records.append(record)
    return records, None
