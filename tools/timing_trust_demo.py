"""Real-clock demonstration that `fusebench compare` flags what changed and only that (issue 11).

Three `fusebench run`s of one case into a scratch store, on real timers (no virtual clock):

1. ``candidate`` is the reference attention called through the seam;
2. the same again, back to back: ``compare --runs 1 2`` must flag nothing;
3. ``candidate`` busy-waits 30% longer than the work it does: ``compare --runs 2 3`` must flag it;
4. two liars, ``zeros`` (returns zeros) and ``no-causal`` (ignores the causal mask), on a causal case in
   forward and backward: they must get no time, and ``compare`` and ``report`` must list them as disagreeing.

Run it on a quiet machine (it measures the machine as much as the code):
``.venv/bin/python tools/timing_trust_demo.py [--case bert-base-128] [--results DIR]``.
Exit status 0 when both verdicts come out as expected.
"""

import argparse
import tempfile
import time

import reference.attention as attention
from fusebench import cli, compare, runner
from fusebench.device import identity
from fusebench.store import ResultsStore


def _honest(q, k, v, **options):
    return attention.scaled_dot_product_attention(q, k, v, backend="reference", **options)


def _thirty_percent_slower(q, k, v, **options):
    # A busy wait rather than time.sleep: a sleeping thread yields its core, which changes what is measured.
    start = time.perf_counter()
    out = _honest(q, k, v, **options)
    deadline = start + 1.3 * (time.perf_counter() - start)
    while time.perf_counter() < deadline:
        pass
    return out


def _zeros(q, k, v, **options):
    return _honest(q, k, v, **options) * 0  # differentiable, so its gradients are judged too


def _ignores_the_causal_mask(q, k, v, *, is_causal=False, **options):
    return _honest(q, k, v, is_causal=False, **options)


def _run(store: ResultsStore, case: str, candidate) -> str:
    attention.register_attention_backend("candidate", candidate)  # replaces the previous run's candidate
    report = runner.run(suites=("attention",), case_names=[case], provider_names=["reference", "candidate"],
                        modes=("forward",), ident=identity("cpu"), store=store, threads=1)
    print(runner.format_summary(report))
    return report.run_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="bert-base-128")
    parser.add_argument("--results", default=None, help="store directory (default: a temporary one)")
    args = parser.parse_args()
    results = args.results or tempfile.mkdtemp(prefix="fusebench-demo-")
    store = ResultsStore(results)
    first = _run(store, args.case, _honest)
    second = _run(store, args.case, _honest)
    slowed = _run(store, args.case, _thirty_percent_slower)

    frame = store.read(strict=True).frame
    verdicts = []
    for title, a, b in (("back to back, same code", first, second), ("candidate slowed by 30%", second, slowed)):
        print(f"\n$ fusebench compare --results {results} --runs {a} {b} --provider candidate   # {title}")
        cli.main(["compare", "--results", results, "--runs", a, b, "--provider", "candidate"])
        verdicts.append(bool(compare.runs(frame, a, b, provider="candidate")["changed"].iloc[0]))
    attention.register_attention_backend("zeros", _zeros)
    attention.register_attention_backend("no-causal", _ignores_the_causal_mask)
    # A store of its own: the default compare would otherwise pool the three candidate runs above (one commit).
    results = f"{results}/liars"
    store = ResultsStore(results)
    liars = runner.run(suites=("attention",), case_names=["clip-text-77"], modes=("forward", "backward"),
                       provider_names=["reference", "zeros", "no-causal"], ident=identity("cpu"), store=store,
                       threads=1)
    print("\n$ fusebench run ... (zeros and no-causal registered through the seam, on the causal clip-text-77)")
    print(runner.format_summary(liars))
    print(f"\n$ fusebench compare --results {results}")
    cli.main(["compare", "--results", results])
    print(f"\n$ fusebench report --results {results}")
    cli.main(["report", "--results", results])
    frame = store.read(strict=True).frame
    liar_rows = frame[frame["provider"].isin(["zeros", "no-causal"])]
    untimed = set(liar_rows["metric"]) == {"agreement"} and not liar_rows["agrees"].astype(bool).any()
    listed = set(compare.excluded(frame)["provider"]) == {"zeros", "no-causal"}
    print(f"liars: stored without a time {untimed}, listed as disagreeing {listed}")
    verdicts += [untimed, listed]
    expected = [False, True, True, True]
    print(f"\nflagged: back to back {verdicts[0]}, slowed {verdicts[1]}; liars untimed {verdicts[2]}, listed "
          f"{verdicts[3]} (expected {expected})")
    return 0 if verdicts == expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
