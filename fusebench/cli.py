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


def _inspect(args: argparse.Namespace) -> int:
    import os

    # Compiling needs real jit functions: kernels imported under the interpreter cannot be compiled.
    os.environ["TRITON_INTERPRET"] = "0"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    from fusebench import inspect as kernel_inspect

    specs = kernel_inspect.shipped_specs(args.modules)
    reports = kernel_inspect.inspect_all(specs, tuple(args.targets))
    if args.json:
        print(json.dumps(kernel_inspect.as_dicts(reports), indent=2))
    else:
        print(kernel_inspect.format_reports(reports))
    failures = kernel_inspect.gate(reports)
    if args.check and failures:
        print("\nkernel gate FAILED:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    if args.check:
        print(f"\nkernel gate passed: {len(specs)} shipped configurations compile for sm_80 and sm_90 without "
              "spills, and every attention configuration uses tensor cores on sm_90", file=sys.stderr)
    return 0


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

    inspect = commands.add_parser("inspect", help="compile every shipped kernel config for NVIDIA GPUs (no GPU needed)")
    inspect.add_argument("--targets", nargs="+", type=int, default=[80, 90, 100, 120],
                         help="compute capabilities (80 = sm_80, 90 = sm_90 ...)")
    inspect.add_argument("--modules", nargs="+", default=None, help="kernels modules (default: all)")
    inspect.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    inspect.add_argument("--check", action="store_true",
                         help="exit 1 if a config fails to compile, spills, or attention lacks tensor cores on sm_90")
    inspect.set_defaults(handler=_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
