"""The `fusebench` command line. Each subcommand is a thin wrapper over a module of the harness."""

from __future__ import annotations

import argparse
import json
import sys


def _list(args: argparse.Namespace) -> int:
    from fusebench.coverage import as_dicts, coverage_rows, format_table

    rows = coverage_rows()
    print(json.dumps(as_dicts(rows), indent=2) if args.json else format_table(rows))
    return 0


def _run(args: argparse.Namespace) -> int:
    from fusebench.quickrun import run

    return run(dtypes=args.dtype, backends=args.backends)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusebench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="the coverage map: seed sections, references, oracles, backends")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=_list)

    run = commands.add_parser("run", help="run every available backend on the CPU-sized cases: agreement and time")
    run.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"], help="candidate dtypes")
    run.add_argument("--backends", nargs="+", default=None, help="attention backends (default: all available)")
    run.set_defaults(handler=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
