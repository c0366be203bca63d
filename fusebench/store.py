"""The results store: one long table of measurements under ``results/runs/``.

One row per (case, provider, mode, metric) with its unit, quantiles (p20, p50, p80), the agreement
ratio of the result it measured, the device identity, the software versions, the commit and a
timestamp (:data:`COLUMNS`). pandas reads it back (:meth:`ResultsStore.read`).

Appends are atomic at file granularity. Each :meth:`ResultsStore.append` writes its rows to a new CSV
file under a hidden temporary name, fsyncs it, renames it to its final, unique name (run id, host,
process, random suffix, and the file's row count and SHA-256) and fsyncs the directory. So:

* a crash mid-write leaves at most a hidden ``.*.partial`` file; nothing already stored is touched;
  a reader beside a live writer skips that writer's partial file quietly, and reports one whose writer
  is gone;
* two writers at once never write the same file, so neither loses rows;
* a reader sees a file either complete or not at all, and a file cut or edited afterwards (even at a row
  boundary) no longer matches the row count and checksum its name carries.

Reading never fails as a whole because of one file, and never skips one silently: a partial write, a file
that is not a results CSV (a foreign file), a CSV whose header, row lengths, row count or checksum are
wrong (a corrupt file), or a file that repeats one already read (a duplicate: counted once) is reported
with its path and what is wrong (:class:`StoreProblem`); a row with a bad cell is left out and reported by
its line; ``strict=True`` raises :class:`StoreError` listing them all.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["COLUMNS", "SCHEMA", "ResultsStore", "StoreProblem", "StoreError", "StoreRead", "new_run_id",
           "default_root"]

SCHEMA = "4"
COLUMNS: tuple[str, ...] = (
    "schema", "run_id", "timestamp",  # which run wrote the row, and when (UTC, ISO 8601)
    "suite", "case", "size", "shape",  # the workload
    "axis_value",  # the case's value on a plot's x axis: its (key) sequence length, a graph's average degree or a
    # model's tokens (``Case.axis_value``); for `fusebench inspect` rows the target's compute capability
    "provider", "mode", "dtype",
    "metric", "unit", "p20", "p50", "p80", "samples",  # the measurement
    "agreement", "agrees", "note",  # the ratio error/allowed of the result measured; notes (interpreted, ...)
    "device_kind", "device", "compute_capability", "driver", "cuda", "torch", "triton", "harness", "python",
    "commit", "dirty", "host", "cpu",
    "gold",  # which gold the agreement ratio was judged against
    "threads", "load_before", "load_after",  # torch threads and the 1-minute load average around the timing
    "flags",  # "oversubscribed", "implausible: <why>": a figure to distrust, and why
    "repeats",  # the median of each interleaved timing round in the run, ';'-separated
    # on a cluster (fusebench.cluster): the Ray node and the logical GPU that ran the row; "" in-process
    "node", "gpu",
)
# Older schemas are still read; their rows have the later columns empty and their renamed columns today's name.
# 1: before the timing provenance columns; 2: before the cluster columns; 3: before axis_value was named (it was x).
_RENAMED = {"x": "axis_value"}  # a column's name in schemas 1 to 3 -> its name now
_OLD_NAMES = tuple({new: old for old, new in _RENAMED.items()}.get(column, column) for column in COLUMNS)
_SCHEMA_COLUMNS = {"1": _OLD_NAMES[: COLUMNS.index("gold")], "2": _OLD_NAMES[: COLUMNS.index("node")],
                   "3": _OLD_NAMES, "4": COLUMNS}
_NUMERIC = ("axis_value", "p20", "p50", "p80", "samples", "agreement", "threads", "load_before", "load_after")
_REQUIRED = ("schema", "run_id", "timestamp", "suite", "case", "provider", "mode", "metric", "unit", "p50")
_BOOLEAN = ("agrees", "dirty")
PARTIAL_SUFFIX = ".partial"
# "<run>-<host>-<pid>-<random>-n<rows>-<sha256 prefix>.csv": what a reader checks the file against.
_NAME = re.compile(r"-(?P<pid>\d+)-[0-9a-f]{12}-n(?P<rows>\d+)-(?P<sha>[0-9a-f]{16})\.csv$")
# A partial file this old whose writer cannot be seen (another host) is taken as abandoned.
STALE_PARTIAL_S = 3600


def _slug(text: str) -> str:
    """A run id or host name made safe as part of a file name ('/' and other odd characters replaced)."""
    return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("._") or "x"


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
    in_flight: list = field(default_factory=list)  # partial files a live writer is writing now (not problems)


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
        digest = hashlib.sha256(data).hexdigest()[:16]

        self.table_dir.mkdir(parents=True, exist_ok=True)
        run_id = _slug(str(rows[0]["run_id"]))
        name = (f"{run_id}-{_slug(socket.gethostname())}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
                f"-n{len(rows)}-{digest}.csv")
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
        """Every stored row (once) as a DataFrame, and every file that is not valid results.

        ``strict``: raise :class:`StoreError` instead of returning problems.
        """
        import pandas as pd

        problems: list[StoreProblem] = []
        in_flight: list[Path] = []
        records: list[dict] = []
        seen_files: dict[str, Path] = {}  # checksum of the rows -> the first file that held them
        seen_rows: set = set()
        files = 0
        entries = sorted(self.table_dir.iterdir()) if self.table_dir.is_dir() else []
        for path in entries:
            if path.name.endswith(PARTIAL_SUFFIX):
                if _writer_alive(path):
                    in_flight.append(path)
                else:
                    problems.append(StoreProblem(path, "incomplete write: its writer crashed mid-append "
                                                       "(no live process wrote it); its rows are not read"))
                continue
            if not path.is_file() or path.suffix != ".csv":
                problems.append(StoreProblem(path, "foreign file: not a results CSV (expected *.csv rows)"))
                continue
            file_records, file_problems, fatal = _parse(path)
            problems += file_problems
            if fatal:
                continue
            body = hashlib.sha256(repr([sorted(r.items()) for r in file_records]).encode()).hexdigest()
            if body in seen_files:
                problems.append(StoreProblem(path, f"duplicate: the same rows as {seen_files[body].name}; "
                                                   "counted once"))
                continue
            seen_files[body] = path
            files += 1
            repeated = 0
            for record in file_records:
                key = tuple(record.get(c, "") for c in COLUMNS)
                if key in seen_rows:
                    repeated += 1
                    continue
                seen_rows.add(key)
                records.append(record)
            if repeated:
                problems.append(StoreProblem(path, f"duplicate: {repeated} row(s) already read from another file; "
                                                   "counted once"))
        if strict and problems:
            raise StoreError(problems)
        frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
        for column in _NUMERIC:  # cells were checked by _parse: "" is missing, anything else a float
            frame[column] = [math.nan if v in ("", None) else float(v) for v in frame[column]]
        for column in _BOOLEAN:
            frame[column] = frame[column].map({"True": True, "False": False, "": None, None: None})
        return StoreRead(frame, problems, files, in_flight)


def _writer_alive(partial: Path) -> bool:
    """Whether the process that is writing ``partial`` may still be writing it.

    The name carries the writer's host and pid: on this host, the pid is asked; a file from another host
    (a shared results directory) is taken as live while it is younger than :data:`STALE_PARTIAL_S`.
    """
    match = _NAME.search(partial.name.removeprefix(".").removesuffix(PARTIAL_SUFFIX))
    if match is None:
        return False
    host = _slug(socket.gethostname())
    if f"-{host}-{match['pid']}-" in partial.name:
        try:
            os.kill(int(match["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by someone else
            return True
        return True
    try:
        return time.time() - partial.stat().st_mtime < STALE_PARTIAL_S
    except OSError:
        return False


def _parse(path: Path) -> tuple[list[dict], list[StoreProblem], bool]:
    """(the file's valid rows, its problems, whether the whole file is unusable)."""
    fatal = lambda reason: ([], [StoreProblem(path, reason)], True)  # noqa: E731
    try:
        data = path.read_bytes()
        text = data.decode()
    except (OSError, UnicodeDecodeError) as error:
        return fatal(f"corrupt: cannot be read as text ({error})")
    if not text.endswith("\n"):
        return fatal("corrupt: truncated (the last row does not end with a newline)")
    try:
        lines = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        return fatal(f"corrupt: not valid CSV ({error})")
    header = tuple(lines[0]) if lines else ()
    schema = next((version for version, columns in _SCHEMA_COLUMNS.items() if header == columns), None)
    if schema is None:
        head = ",".join(header)[:80]
        return fatal(f"foreign file: its header is not the results schema (starts {head!r})")
    expected = _NAME.search(path.name)
    if expected is not None:
        count, digest = len(lines) - 1, hashlib.sha256(data).hexdigest()[:16]
        if count != int(expected["rows"]):
            return fatal(f"corrupt: truncated or extended: {count} rows, its name says {expected['rows']}")
        if digest != expected["sha"]:
            return fatal(f"corrupt: its content changed after it was written (checksum {digest}, its name says "
                         f"{expected['sha']})")
    names = header if schema == SCHEMA else tuple(_RENAMED.get(column, column) for column in header)
    problems = []
    records = []
    for number, values in enumerate(lines[1:], start=2):
        if len(values) != len(header):
            return fatal(f"corrupt: line {number} has {len(values)} fields, expected {len(header)}")
        record = dict.fromkeys(COLUMNS, "") | dict(zip(names, values, strict=True))
        bad = _bad_cell(record, schema)
        if bad:
            problems.append(StoreProblem(path, f"bad cell: line {number} {bad}; that row is not read"))
            continue
        records.append(record)
    if expected is None:
        problems.append(StoreProblem(path, "unverified: its name carries no row count and checksum (not written "
                                           "by ResultsStore.append), so a cut at a row boundary cannot be seen; "
                                           "its rows are read"))
    return records, problems, False


def _bad_cell(record: dict, schema: str) -> str:
    """What is wrong with one row's cells ("" when nothing is)."""
    if record["schema"] != schema:
        return f"has schema {record['schema']!r}, expected {schema}"
    for column in _REQUIRED:
        if record[column] == "":
            return f"has no {column}"
    for column in _NUMERIC:
        if record[column] != "":
            try:
                value = float(record[column])
            except ValueError:
                return f"column {column} is not a number ({record[column]!r})"
            if column == "p50" and not math.isfinite(value) and record["metric"] != "agreement":
                return f"column p50 is not a finite measurement ({record[column]!r})"
    for column in _BOOLEAN:
        if record[column] not in ("", "True", "False"):
            return f"column {column} is not True/False ({record[column]!r})"
    return ""
