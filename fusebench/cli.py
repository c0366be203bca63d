"""The `fusebench` command line. Each subcommand is a thin wrapper over a module of the harness."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _list(args: argparse.Namespace) -> int:
    from fusebench.coverage import as_dicts, check, coverage_rows, format_table, read_recording
    from fusebench.device import git_commit

    recording = read_recording()
    rows = coverage_rows(recording)
    print(json.dumps(as_dicts(rows), indent=2) if args.json else format_table(rows, recording))
    if not args.check:
        return 0
    problems = check(recording, current_commit=git_commit()[0])
    if problems:
        print("\ncoverage map check FAILED:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    print("\ncoverage map check passed: every section with a kernel seam was run with its kernel by a "
          "module-level test, as recorded by the complete test run of this commit", file=sys.stderr)
    return 0


def _mutants(args: argparse.Namespace) -> int:
    from fusebench import mutants

    catalog = [m for m in mutants.CATALOG if not args.only or any(word in m.name for word in args.only)]
    if args.list:
        print(mutants.format_catalog(catalog))
        return 0
    problems = mutants.check_anchors(catalog)
    if problems:
        print("mutant anchors FAILED (the kernels changed; update fusebench/mutants.py):", *problems, sep="\n  ",
              file=sys.stderr)
        return 2
    if args.seed is None:
        from fusebench.inputs import run_seed

        args.seed = run_seed()
    print(f"{len(catalog)} mutants, {args.jobs} at a time, FUSEBENCH_SEED={args.seed}; the unmutated kernels first",
          file=sys.stderr)
    outcomes = mutants.run(catalog, seed=args.seed, jobs=args.jobs, timeout=args.timeout,
                           progress=lambda o: print(mutants.format_row(o), file=sys.stderr, flush=True))
    print(mutants.format_table(outcomes))
    if not args.no_store:
        import time

        from fusebench.device import identity
        from fusebench.store import new_run_id

        timestamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rows = mutants.store_rows(outcomes, identity(), new_run_id(), timestamp, args.seed)
        print(f"{len(rows)} rows stored in {_store(args).append(rows)}", file=sys.stderr)
    survivors = [o for o in outcomes if not o.killed and not o.mutant.equivalent]
    return 1 if survivors else 0


def _inspect(args: argparse.Namespace) -> int:
    import os

    # Compiling needs real jit functions: kernels imported under the interpreter cannot be compiled.
    os.environ["TRITON_INTERPRET"] = "0"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    from fusebench import inspect as kernel_inspect

    specs, unserved = kernel_inspect.catalog_specs(args.modules, args.launches)
    if args.baseline:  # the cost table's anchor: compiled beside ours, never shipped
        from fusebench.baseline_attention import compile_specs as baseline_specs

        specs += baseline_specs()
    matches = lambda s: all(word in f"{s.kernel} [{s.config}]" for word in args.match or ())
    specs, unserved = [s for s in specs if matches(s)], [s for s in unserved if matches(s)]
    for spec in unserved:
        print(f"not compiled, no catalog launch runs it: {spec.kernel} [{spec.config}]", file=sys.stderr)
    reports = kernel_inspect.inspect_all(specs, tuple(args.targets), jobs=args.jobs)
    if args.json:
        print(json.dumps(kernel_inspect.as_dicts(reports), indent=2))
    else:
        from fusebench.sass_cost import format_cost

        print(format_cost(reports) if args.cost else kernel_inspect.format_reports(reports))
    if not args.no_store and reports:
        import time

        from fusebench.device import identity
        from fusebench.store import new_run_id

        timestamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rows = kernel_inspect.store_rows(reports, identity(), new_run_id(), timestamp)
        path = _store(args).append(rows)
        print(f"{len(rows)} rows stored in {path}", file=sys.stderr)
    failures = kernel_inspect.gate(reports)
    if args.check and failures:
        print("\nkernel gate FAILED:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    if args.check:
        # The gate applies to the gated targets among those compiled (newer ones are reported, not gated).
        gated = [f"sm_{t}" for t in args.targets if t in kernel_inspect.GATED_CAPABILITIES]
        targets = ", ".join(gated) or "no gated target"
        tensor_cores = ", and every attention configuration uses tensor cores on sm_90" if 90 in args.targets else ""
        print(f"\nkernel gate passed: {len(specs)} shipped configuration specializations compile for {targets} "
              f"without spills{tensor_cores}", file=sys.stderr)
    return 0


def _roofline(args: argparse.Namespace) -> int:
    from fusebench import roofline

    bounds = roofline.table(modes=args.modes, dtype=args.dtype, devices=args.devices or roofline.DEVICES,
                            case_names=args.cases)
    if args.json:
        print(json.dumps([vars(b) | {"ms": b.ms, "bound_by": b.bound_by} for b in bounds], indent=2))
    else:
        print(roofline.format_table(bounds))
    return 0


def _gpu_check(args: argparse.Namespace) -> int:
    from fusebench import gpu_check

    print(gpu_check.plan(), flush=True)
    if args.plan:
        return 0
    verdicts = gpu_check.run(args.out)
    print(gpu_check.format_summary(verdicts))
    print(f"\n{args.out}: summary.md and {gpu_check.ARCHIVE} (results store, log, JUnit XML, asv results)")
    return gpu_check.exit_status(verdicts)


def _store(args: argparse.Namespace):
    from fusebench.store import ResultsStore

    return ResultsStore(args.results)


def _read_store(args: argparse.Namespace):
    """The stored rows; every file that is not valid results is reported on stderr with its path."""
    read = _store(args).read()
    for problem in read.problems:
        print(f"warning: not read: {problem}", file=sys.stderr)
    return read.frame


def _run(args: argparse.Namespace) -> int:
    from fusebench.device import emulate_triton_without_gpu, identity

    emulate_triton_without_gpu()
    from fusebench import runner
    from fusebench.cases import CPU_MODES, MODES, OP_SUITES, SUITES
    from fusebench.metrics import measure_ceilings

    suites = SUITES if args.suite == "all" else (args.suite,)
    if args.cluster or args.resume:
        if args.suite == "models":
            print("fusebench run --cluster: the cluster path runs the op-level suites (attention, graph); run "
                  "--suite models without --cluster", file=sys.stderr)
            return 2
        return _run_on_cluster(args, OP_SUITES if args.suite == "all" else suites)
    if args.gpu_type:
        print("fusebench run: --gpu-type needs --cluster", file=sys.stderr)
        return 2
    ident = identity()
    ceilings = measure_ceilings((args.dtype or "bfloat16",)) if ident.kind == "cuda" and args.ceilings else None
    modes = args.modes or (MODES if ident.kind == "cuda" else CPU_MODES)
    report = runner.run(suites=suites, case_names=args.cases, provider_names=args.providers, modes=modes,
                        dtype=args.dtype, ident=ident, store=None if args.no_store else _store(args),
                        progress=True, ceilings=ceilings, repeats=args.repeats, threads=args.threads)
    print(runner.format_summary(report))
    return 1 if report.failed else 0


def _run_on_cluster(args: argparse.Namespace, suites: tuple) -> int:
    from fusebench import cluster, runner
    from fusebench.cases import CPU_MODES, MODES

    why = cluster.missing_ray()
    if why:
        print(f"fusebench run --cluster: {why}", file=sys.stderr)
        return 2
    if args.no_store and args.resume:
        print("fusebench run: --resume needs the store (it runs what the store lacks); drop --no-store",
              file=sys.stderr)
        return 2
    # The nodes' devices are not known here: a GPU cluster runs every mode, `local` on a CPU the CPU's.
    import torch

    local_cpu = (args.cluster or "local") == "local" and not torch.cuda.is_available()
    modes = args.modes or (CPU_MODES if local_cpu else MODES)
    report = cluster.run(args.cluster or "local", suites=suites, case_names=args.cases,
                         provider_names=args.providers, modes=modes, dtype=args.dtype,
                         store=None if args.no_store else _store(args), gpu_type=args.gpu_type, resume=args.resume,
                         repeats=args.repeats, threads=args.threads)
    if report.run.identity is not None:
        print(runner.format_summary(report.run))
    print(report.format())
    return 1 if report.run.failed or report.failed or report.interrupted else 0


def _compare(args: argparse.Namespace) -> int:
    from fusebench import compare

    frame = _read_store(args)
    if frame.empty:
        print(f"no results stored under {_store(args).table_dir}; run `fusebench run` first", file=sys.stderr)
        return 1
    filters = {"suite": args.suite, "mode": args.mode, "dtype": args.dtype}
    options = {"min_effect": args.min_effect, **filters}
    try:
        if args.providers:
            tables = [compare.providers(frame, *args.providers, device=args.device, commit=args.commit, **options)]
        elif args.devices:
            tables = [compare.devices(frame, *args.devices, provider=args.provider, commit=args.commit, **options)]
        elif args.commits:
            tables = [compare.commits(frame, *args.commits, device=args.device, provider=args.provider, **options)]
        elif args.runs:
            tables = [compare.runs(frame, *args.runs, provider=args.provider, **options)]
        else:
            tables = compare.against_reference(frame, device=args.device, commit=args.commit, **options)
    except ValueError as error:
        print(f"fusebench compare: {error}", file=sys.stderr)
        return 1
    print(compare.format_excluded(compare.excluded(_filter(frame, filters))))
    print()
    for table in tables:
        print(compare.format_table(table))
        print()
    if not (args.providers or args.devices or args.commits or args.runs):
        print(compare.format_fast_p(compare.fast_p(_filter(frame, filters), p=args.fast_p), p=args.fast_p))
        print()
    print(compare.LEGEND)
    return 0


def _filter(frame, filters: dict):
    for column, value in filters.items():
        if value is not None:
            frame = frame[frame[column] == value]
    return frame


def _report(args: argparse.Namespace) -> int:
    from fusebench import report

    frame = _read_store(args)
    if frame.empty:
        print(f"no results stored under {_store(args).table_dir}; run `fusebench run` first", file=sys.stderr)
        return 1
    out = args.out or os.path.join(_store(args).root, "report")
    for path in report.write_report(frame, out):
        print(path)
    print(report.format_not_ranked(frame))
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from fusebench import dashboard

    if args.record:
        try:
            dashboard.record(bench=args.bench, allow_dirty=args.allow_dirty)
        except dashboard.DirtyTree as error:
            print(f"fusebench dashboard: {error}", file=sys.stderr)
            return 1
    if args.merge:
        try:
            machines = dashboard.merge(args.merge)
        except (ValueError, dashboard.MergeConflict) as error:
            print(f"fusebench dashboard: {error}", file=sys.stderr)
            return 1
        print(f"merged {len(machines)} machine(s) into {dashboard.results_dir()}: {', '.join(machines)}")
    results = dashboard.results_dir()
    if not any(results.glob("*/machine.json")):
        print(f"no asv results under {results}; record this commit's first: fusebench dashboard --record",
              file=sys.stderr)
        return 1
    dashboard.publish()
    if args.no_preview:
        print(f"published to {dashboard.html_dir()}")
        return 0
    return dashboard.preview(port=args.port)


def _roofline_devices() -> tuple[str, ...]:
    from fusebench.roofline import DEVICES

    return DEVICES


def build_parser() -> argparse.ArgumentParser:
    from fusebench.cases import CPU_MODES, MODES, names

    parser = argparse.ArgumentParser(prog="fusebench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="the coverage map: seed sections, references, oracles and their kind, "
                                                  "the backends tests ran")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.add_argument("--check", action="store_true",
                         help="exit 1 unless the recorded map is of this commit and every kernel section ran its "
                              "kernel in a module-level test")
    listing.set_defaults(handler=_list)

    roof = commands.add_parser("roofline", help="analytic lower-bound time of every case on each GPU of the table")
    roof.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="bfloat16")
    roof.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    roof.add_argument("--cases", nargs="+", choices=names("attention") + names("graph"), metavar="CASE",
                      help="cases (default: every op-level case)")
    roof.add_argument("--devices", nargs="+", default=None, metavar="GPU",
                      help="table devices (default: all): " + ", ".join(_roofline_devices()))
    roof.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    roof.set_defaults(handler=_roofline)

    def results_option(command):
        command.add_argument("--results", default=None, metavar="DIR",
                             help="the results directory (default: $FUSEBENCH_RESULTS or the repository's results/)")

    inspect = commands.add_parser("inspect", help="compile every shipped kernel config for NVIDIA GPUs (no GPU needed)")
    inspect.add_argument("--targets", nargs="+", type=int, default=[80, 90, 100, 120],
                         help="compute capabilities (80 = sm_80, 90 = sm_90 ...)")
    inspect.add_argument("--modules", nargs="+", default=None, help="kernels modules (default: all)")
    inspect.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    inspect.add_argument("--cost", action="store_true",
                         help="print the main loop's static cost (instructions, issue and tensor-core clocks, mix)")
    inspect.add_argument("--baseline", action="store_true",
                         help="also compile the anchor attention kernel (fusebench/baseline_attention.py)")
    inspect.add_argument("--match", nargs="+", default=None,
                         help="only the configurations whose 'kernel [config]' contains every one of these words")
    inspect.add_argument("--launches", choices=("all", "gpu"), default="all",
                         help="the launches whose specializations are compiled: all (both sizes of every case and "
                              "the correctness tiers' shapes) or gpu (the catalog's gpu-size cases: gpu-check's)")
    inspect.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile in parallel processes")
    inspect.add_argument("--check", action="store_true",
                         help="exit 1 if a config fails to compile, spills, or attention lacks tensor cores on sm_90")
    inspect.add_argument("--no-store", action="store_true", help="print only; do not append rows to the store")
    results_option(inspect)
    inspect.set_defaults(handler=_inspect)

    mut = commands.add_parser("mutants", help="mutation testing: realistic faults in the kernels, one at a time; "
                                              "which test kills each, and the mutation score")
    mut.add_argument("--only", nargs="+", metavar="WORD", help="only mutants whose name contains one of these")
    mut.add_argument("--list", action="store_true", help="list the catalog and exit")
    mut.add_argument("--jobs", type=int, default=2, help="mutants run at once (one process each; default 2)")
    mut.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant before it counts as killed")
    mut.add_argument("--seed", type=int, default=None, help="FUSEBENCH_SEED for the test runs (default: this run's)")
    mut.add_argument("--no-store", action="store_true", help="print only; do not append rows to the store")
    results_option(mut)
    mut.set_defaults(handler=_mutants)

    run = commands.add_parser("run", help="benchmark every provider on the cases: agreement, time, memory; store rows")
    run.add_argument("--suite", choices=("attention", "graph", "models", "all"), default="all",
                     help="models: whole transformers and PyG models (fusebench.integrations.benchmarks); all: "
                          "every suite (on a cluster, the op-level ones)")
    run.add_argument("--cases", nargs="+", choices=names(), metavar="CASE", help=f"cases (default all): {names()}")
    run.add_argument("--providers", nargs="+", metavar="NAME", help="providers (default: every one that runs here)")
    run.add_argument("--modes", nargs="+", choices=MODES, default=None,
                     help=f"default: all on a GPU, {' and '.join(CPU_MODES)} on a CPU")
    run.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                     help="candidate dtype (default bfloat16 on a GPU, float32 on a CPU)")
    run.add_argument("--no-store", action="store_true", help="print the table without storing rows")
    run.add_argument("--repeats", type=int, default=3,
                     help="interleaved timing rounds per case (compare flags a change from 3 on each side)")
    run.add_argument("--threads", type=int, default=None,
                     help="torch CPU threads while timing (default: torch's current count); recorded on each row")
    run.add_argument("--no-ceilings", dest="ceilings", action="store_false",
                     help="on a GPU, skip measuring the device's bandwidth and matmul ceilings")
    run.add_argument("--cluster", metavar="ADDRESS",
                     help="run the plan as Ray tasks, one GPU each, on the Ray cluster at ADDRESS ('local': start "
                          "one on this machine); rows come back here (needs fusebench[cluster])")
    run.add_argument("--gpu-type", metavar="TYPE",
                     help="with --cluster: only GPUs of this Ray accelerator type (e.g. H100, A100, L4)")
    run.add_argument("--resume", metavar="RUN_ID",
                     help="with --cluster: run only the tasks of run RUN_ID whose rows are not stored yet")
    results_option(run)
    run.set_defaults(handler=_run)

    cmp = commands.add_parser("compare", help="speedup tables from the store: providers, GPUs or commits")
    which = cmp.add_mutually_exclusive_group()
    which.add_argument("--providers", nargs=2, metavar=("A", "B"), help="provider A vs provider B on one device")
    which.add_argument("--devices", nargs=2, metavar=("X", "Y"), help="device X vs device Y (names as stored)")
    which.add_argument("--commits", nargs=2, metavar=("A", "B"), help="commit A vs commit B (prefixes allowed)")
    which.add_argument("--runs", nargs=2, metavar=("A", "B"), help="run A vs run B (run ids or unique prefixes)")
    cmp.add_argument("--device", help="restrict to this device (default: the most recently measured)")
    cmp.add_argument("--commit", help="restrict to this commit (default: the most recently measured)")
    cmp.add_argument("--provider", help="restrict device/commit comparisons to one provider")
    cmp.add_argument("--suite", choices=("attention", "graph"))
    cmp.add_argument("--mode", choices=MODES)
    cmp.add_argument("--dtype")
    cmp.add_argument("--min-effect", type=float, default=0.05,
                     help="smallest relative change flagged (default 0.05: 5%%), besides a 95%% interval excluding 1")
    cmp.add_argument("--fast-p", type=float, default=1.0, help="the factor p of fast_p (default 1: faster at all)")
    results_option(cmp)
    cmp.set_defaults(handler=_compare)

    rep = commands.add_parser("report", help="plots (TFLOP/s vs sequence length, GB/s vs degree) and an HTML page")
    rep.add_argument("--out", default=None, help="output directory (default: <results>/report)")
    results_option(rep)
    rep.set_defaults(handler=_report)

    check = commands.add_parser("gpu-check", help="one-call GPU validation (under 8 min), packed into one archive; "
                                                  "a dry run without CUDA")
    check.add_argument("out", metavar="OUT", help="output folder: summary.md and one archive of everything else")
    check.add_argument("--plan", action="store_true", help="print the steps and their time budgets, run nothing")
    check.set_defaults(handler=_gpu_check)

    dash = commands.add_parser("dashboard", help="asv publish + asv preview over results/asv")
    dash.add_argument("--record", action="store_true",
                      help="first run the asv suites for the checked-out commit (asv run -E existing)")
    dash.add_argument("--bench", default=None, help="with --record: a regular expression selecting benchmarks")
    dash.add_argument("--allow-dirty", action="store_true",
                      help="with --record: record a tree with uncommitted changes (marked -dirty, apart from HEAD's)")
    dash.add_argument("--merge", nargs="+", metavar="DIR",
                      help="first merge results recorded on other machines: each DIR a copy of another checkout's "
                           "results/ (asv results, device sidecars, the runs/ store) or of its results/asv")
    dash.add_argument("--no-preview", action="store_true", help="publish only; do not serve")
    dash.add_argument("--port", type=int, default=8080)
    dash.set_defaults(handler=_dashboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
