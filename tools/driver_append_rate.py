"""How fast the cluster driver can store rows: a synthetic flood of task results appended to a results store.

The driver of `fusebench run --cluster` appends each finished task's rows as one atomic file
(ResultsStore.append: write, fsync, rename, fsync the directory). This times that path alone, and
optionally Ray's round trip of tasks that only return rows (`--ray`), on this machine:

    .venv/bin/python tools/driver_append_rate.py --tasks 2000 --rows 6 [--ray]
"""

import argparse
import tempfile
import time

from fusebench.store import COLUMNS, SCHEMA, ResultsStore


def synthetic_rows(task: int, rows: int) -> list[dict]:
    """``rows`` full-width rows shaped like one measured task's (agreement, time, rate, memory ...)."""
    base = dict.fromkeys(COLUMNS, "x" * 12) | {
        "schema": SCHEMA, "run_id": "20261130T000000Z-flood000", "timestamp": "2026-11-30T00:00:00Z",
        "case": f"case-{task}", "p20": 1.25, "p50": 1.5, "p80": 1.75, "samples": 30.0, "axis_value": 128.0,
        "agreement": 0.5, "agrees": True, "dirty": False, "threads": 1.0, "load_before": 0.5, "load_after": 0.5,
        "repeats": "1.5;1.5;1.5"}
    return [base | {"metric": f"m{i}"} for i in range(rows)]


def store_rate(tasks: int, rows: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as root:
        store = ResultsStore(root)
        payloads = [synthetic_rows(t, rows) for t in range(tasks)]
        start = time.perf_counter()
        for payload in payloads:
            store.append(payload)
        seconds = time.perf_counter() - start
    return tasks / seconds, tasks * rows / seconds


def ray_rate(tasks: int, rows: int) -> float:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        flood = ray.remote(synthetic_rows)
        ray.get([flood.remote(t, rows) for t in range(50)])  # workers started
        start = time.perf_counter()
        pending = [flood.remote(t, rows) for t in range(tasks)]
        while pending:
            ready, pending = ray.wait(pending, num_returns=min(len(pending), 64), timeout=0.5)
            ray.get(ready)
        return tasks / (time.perf_counter() - start)
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=6, help="rows per task (a measured task stores 5-6)")
    parser.add_argument("--ray", action="store_true", help="also time Ray's round trip of row-returning tasks")
    args = parser.parse_args()
    tasks_per_s, rows_per_s = store_rate(args.tasks, args.rows)
    print(f"store append: {args.tasks} tasks x {args.rows} rows: {tasks_per_s:,.0f} tasks/s, {rows_per_s:,.0f} rows/s")
    if args.ray:
        print(f"ray round trip (tasks returning {args.rows} rows, local Ray, 2 CPUs): "
              f"{ray_rate(args.tasks, args.rows):,.0f} tasks/s")


if __name__ == "__main__":
    main()
