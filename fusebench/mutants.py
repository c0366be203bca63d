"""Mutation testing of the Triton kernels: do the correctness suites catch realistic wrong kernels?

A check that has never caught a wrong kernel proves nothing. :data:`CATALOG` lists faults that kernel
authors actually make (an off-by-one causal boundary, a dropped last tile, an online softmax that forgets
to rescale, a CSR row end off by one, ...). Each :class:`Mutant` is anchored on the exact source text it
changes, so when the kernel code moves on, the anchor fails loudly (:class:`AnchorError`) instead of the
mutant silently testing nothing.

:func:`run` applies one mutant at a time to a *copy* of the ``kernels`` package in a temporary directory
(the working tree is never written), and runs the fast correctness subset of :data:`SUBSETS` in a fresh
interpreter whose ``sys.path`` starts with that copy (the subprocess asserts that the mutated copy is what
it imported). pytest stops at the first failing test: that test killed the mutant. The unmutated copy runs
first; if it does not pass, nothing is reported (a broken set-up would otherwise "kill" every mutant).

The mutation score is killed / (mutants - equivalent ones). A surviving mutant needs a new test, or a
written reason (:attr:`Mutant.equivalent`) why no test can tell it from the original.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["Mutant", "Outcome", "AnchorError", "CATALOG", "SUBSETS", "apply", "run", "score", "format_table",
           "format_catalog", "store_rows"]


class AnchorError(LookupError):
    """A mutant's anchor text is not in its file (the kernel changed): the catalog needs updating."""


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to the repository root, e.g. "kernels/attention.py"
    find: str  # the exact source text replaced (its `occurrence`-th appearance)
    replace: str
    occurrence: int = 1  # 1-based: which appearance of `find` (the same line can sit in several kernels)
    why: str = ""  # the real bug it stands for
    equivalent: str = ""  # non-empty: the reason no test can distinguish it (counted apart from the score)


@dataclass
class Outcome:
    mutant: Mutant
    line: int  # the line the anchor starts on
    killed: bool
    killed_by: str  # the first failing test, "timeout", or "" for a survivor
    seconds: float
    detail: str = ""


# The kernels' source, anchored. Each `find` is copied from the kernel file; `occurrence` picks the kernel
# when the same line appears in several (forward first, then dK/dV, then dQ in attention.py).
CATALOG: tuple[Mutant, ...] = (
    # ---- kernels/attention.py -------------------------------------------------------------------------
    Mutant("attn causal boundary off by one", "kernels/attention.py",
           "keep = keep & (on <= om + (n_k - n_q))", "keep = keep & (on < om + (n_k - n_q))",
           why="the diagonal key masked out (< instead of <=)"),
    Mutant("attn causal aligned top-left", "kernels/attention.py",
           "keep = keep & (on <= om + (n_k - n_q))", "keep = keep & (on <= om)",
           why="causal mask aligned to the top left: wrong whenever Nq != Nk"),
    Mutant("attn scale not applied", "kernels/attention.py",
           "qk_scale = sm_scale * _LOG2E", "qk_scale = _LOG2E", occurrence=1,
           why="the forward forgets the softmax scale"),
    Mutant("attn scale applied twice", "kernels/attention.py",
           "qk_scale = sm_scale * _LOG2E", "qk_scale = sm_scale * sm_scale * _LOG2E", occurrence=1,
           why="the scale folded into q and applied again to the scores"),
    Mutant("attn key-padding mask on the query axis", "kernels/attention.py",
           "position = tl.load(kpm_base + on * stride_kpn, mask=on < n_k, other=-1)",
           "position = tl.load(kpm_base + om * stride_kpn, mask=om < n_k, other=-1)",
           why="key_padding_mask indexed by query row instead of key column"),
    Mutant("attn last partial key tile dropped", "kernels/attention.py",
           "for start_n in range(lo, hi, BLOCK_N):", "for start_n in range(lo, hi // BLOCK_N * BLOCK_N, BLOCK_N):",
           occurrence=1, why="the forward's key loop stops at the last full tile"),
    Mutant("attn interior key blocks reach past the diagonal", "kernels/attention.py",
           "end = tl.minimum(end, first_row + (n_k - n_q) + 1)", "end = tl.minimum(end, first_row + (n_k - n_q) + 2)",
           why="the unmasked interior loop takes a block one key past its first row's diagonal"),
    Mutant("attn dK/dV interior query blocks start one row early", "kernels/attention.py",
           "need = start_n + BLOCK_N - 1 - (n_k - n_q)", "need = start_n + BLOCK_N - 2 - (n_k - n_q)",
           why="dK/dV runs unmasked a query block whose first row does not see the key block's last key"),
    Mutant("attn last partial query tile dropped", "kernels/attention.py",
           'return (triton.cdiv(problem.n_q, meta["BLOCK_M"]), problem.batch * hq)',
           'return (problem.n_q // meta["BLOCK_M"], problem.batch * hq)',
           why="the forward grid rounds the query blocks down"),
    Mutant("attn GQA head mapping interleaved", "kernels/attention.py",
           "kvh = h // GROUPS", "kvh = h % (H // GROUPS)", occurrence=1,
           why="query head h reads kv head h mod Hkv instead of h // (Hq / Hkv)"),
    Mutant("attn running max does not rescale the accumulator", "kernels/attention.py",
           "acc = _dot(p.to(v.dtype), v, acc * alpha[:, None], UPCAST_BF16, DOT_PRECISION)",
           "acc = _dot(p.to(v.dtype), v, acc, UPCAST_BF16, DOT_PRECISION)",
           why="online softmax: the accumulator keeps terms scaled by a stale maximum"),
    Mutant("attn running sum not rescaled", "kernels/attention.py",
           "l_i = l_i * alpha + tl.sum(p, 1)", "l_i = l_i + tl.sum(p, 1)",
           why="online softmax: the denominator keeps terms scaled by a stale maximum"),
    Mutant("attn lse stored without the max", "kernels/attention.py",
           'lse2 = tl.where(empty, float("-inf"), m_i + tl.math.log2(l_safe))',
           'lse2 = tl.where(empty, float("-inf"), tl.math.log2(l_safe))',
           why="log-sum-exp saved as log(l) alone: the backward's probabilities are off by exp(m)"),
    Mutant("attn fully masked row gives NaN", "kernels/attention.py",
           'm_safe = tl.where(m_new == float("-inf"), 0.0, m_new)', "m_safe = m_new",
           why="exp2(-inf - -inf) = NaN on a row with no key left"),
    Mutant("attn delta from low-precision O", "kernels/attention.py",
           "ctx.save_for_backward(q4, k4, v4, out if out32 is None else out32, lse, attn_mask, key_padding_mask)",
           "ctx.save_for_backward(q4, k4, v4, out, lse, attn_mask, key_padding_mask)",
           why="delta = rowsum(dO * O) read from O rounded to float16/bfloat16",
           equivalent="not reliably distinguishable in one run: test_large_logits_do_not_overflow[bfloat16] kills it "
                      "on about one seed in six (FUSEBENCH_SEED 7 and 10 of 2..13: dK ratios 9.8 and 8.4e3), where "
                      "a near one-hot row's gradient cancels; the other seeds leave it within the k-rule, since the "
                      "eager bfloat16 reference, the rule's baseline, differentiates through a rounded O too"),
    Mutant("attn delta pre-pass drops the last partial query block", "kernels/attention.py",
           "_attn_bwd_delta_kernel[(triton.cdiv(problem.n_q, _DELTA_BLOCK_M), problem.batch * hq)](",
           "_attn_bwd_delta_kernel[(problem.n_q // _DELTA_BLOCK_M, problem.batch * hq)](",
           why="delta = rowsum(dO * O) never written for the last rows: their gradients read an uninitialized delta"),
    Mutant("attn dK missing the scale", "kernels/attention.py",
           "dk = dk * sm_scale", "dk = dk",
           why="dK = dS^T Q forgets the softmax scale"),
    Mutant("attn dK/dV causal start one block late", "kernels/attention.py",
           "lo = tl.maximum(start_n - (n_k - n_q), 0) // BLOCK_M * BLOCK_M",
           "lo = tl.maximum(start_n + BLOCK_N - (n_k - n_q), 0) // BLOCK_M * BLOCK_M",
           why="the dK/dV kernel skips queries that see only part of its key block"),
    Mutant("attn dK/dV GQA head group interleaved", "kernels/attention.py",
           "h = kvh * GROUPS + g", "h = kvh + g * H_KV",
           why="the backward sums the wrong query heads into a kv head"),
    Mutant("attn K/V tile by TMA one key late", "kernels/attention.py",
           "tile = desc.load([start_n, 0])", "tile = desc.load([start_n + 1, 0])",
           why="a tensor-descriptor tile coordinate off by one row (the sm_90 path of the forward and dQ; the "
               "interpreter runs it when test_tma_path_agrees_with_reference forces it)"),
    Mutant("attn dQ takes +delta into the tensor cores", "kernels/attention.py",
           "    neg = -delta\n", "    neg = delta\n",
           why="dQ's 128-row tiles start dP's accumulator at +delta instead of -delta (the interpreter runs that "
               "tile when test_wide_dq_tile_agrees_with_reference gives dQ one)"),
    # ---- kernels/_csr.py and kernels/spmm.py: the CSR core's segment and combine kernels, the aggregation ----
    Mutant("spmm CSR row end off by one", "kernels/_csr.py",
           "end = tl.minimum(start + CHUNK, tl.load(rowptr_ptr + row + 1))",
           "end = tl.minimum(start + CHUNK, tl.load(rowptr_ptr + row + 1) - 1)", occurrence=1,
           why="each row loses its last edge"),
    Mutant("spmm mean divides by the edge count", "kernels/spmm.py",
           "count = (csr.rowptr[1:] - csr.rowptr[:-1]).clamp_min(1)",
           "count = (csr.rowptr[1:] * 0 + csr.num_edges).clamp_min(1)",
           why="mean over all edges of the graph instead of the row's degree"),
    Mutant("spmm max initialised to 0", "kernels/_csr.py",
           'acc = tl.full([BLOCK_F], float("-inf"), tl.float32)\n        arg = tl.full([BLOCK_F], -1, perm_ptr',
           "acc = tl.zeros([BLOCK_F], tl.float32)\n        arg = tl.full([BLOCK_F], -1, perm_ptr",
           why="max reduction starts at 0: an all-negative row gives 0"),
    Mutant("spmm empty max row left at -inf", "kernels/_csr.py",
           "acc = tl.where(end > start, acc, 0.0)  # an empty row is 0, not -inf", "acc = acc",
           why="an isolated node's max is -inf instead of 0"),
    Mutant("spmm GCN normalisation at one end only", "kernels/spmm.py",
           "row_scale = col_scale = _inverse_sqrt_degree(pattern, edge_weight, x.device)",
           "row_scale = _inverse_sqrt_degree(pattern, edge_weight, x.device)",
           why="D^-1/2 A instead of D^-1/2 A D^-1/2"),
    Mutant("spmm split-row partials combined twice", "kernels/_csr.py",
           "acc += tl.sum(tl.load(part_ptr + offs, mask=mask, other=0.0), axis=0)",
           "acc += 2.0 * tl.sum(tl.load(part_ptr + offs, mask=mask, other=0.0), axis=0)",
           why="a long row's partial sums added twice in the second pass"),
    Mutant("spmm max tie goes to the later edge", "kernels/_csr.py",
           "take = block_max > acc  # strict: an earlier block keeps its (smaller) edge id on a tie",
           "take = block_max >= acc",
           why="on a tie across edge blocks the gradient goes to the later edge (the rule is the first)"),
    Mutant("spmm max gradient to every edge", "kernels/_csr.py",
           "acc += tl.sum(tl.where(mask & (chosen == eid[:, None]), vals, 0.0), axis=0)",
           "acc += tl.sum(tl.where(mask, vals, 0.0), axis=0)",
           why="the backward of max ignores the arg-max and sends the gradient along every edge"),
    # ---- kernels/gat.py ------------------------------------------------------------------------------
    Mutant("gat softmax without its max", "kernels/gat.py",
           "m_new = tl.maximum(m, tl.max(s, axis=0))  # finite: the block holds at least one edge",
           "m_new = tl.zeros([], tl.float32)",
           why="exp(s) unshifted: right for small scores, inf/NaN for large ones"),
    Mutant("gat LeakyReLU dropped", "kernels/gat.py",
           "s = tl.where(z > 0, z, z * negative_slope)  # LeakyReLU", "s = z",
           why="the attention logits skip the LeakyReLU"),
    Mutant("gat source and destination swapped", "kernels/gat.py",
           "rowptr_ptr, seg_row_ptr, seg_start_ptr, seg_part_ptr, adst_ptr, num_channels,",
           "rowptr_ptr, seg_row_ptr, seg_start_ptr, seg_part_ptr, asrc_ptr, num_channels,", occurrence=1,
           why="alpha_src read where alpha_dst belongs"),
    Mutant("gat split-row partials not rescaled", "kernels/gat.py",
           "acc = acc * correction + tl.sum(scale[:, None] * acc_s, axis=0)",
           "acc = acc + tl.sum(acc_s, axis=0)",
           why="a long row's partial softmax states merged without their maxima"),
    Mutant("gat backward without the LeakyReLU derivative", "kernels/gat.py",
           "dz = p * (dot - delta) * tl.where(z > 0, 1.0, negative_slope)", "dz = p * (dot - delta)",
           why="the score gradient treats LeakyReLU as the identity"),
    Mutant("gat delta from low-precision out", "kernels/gat.py",
           "ctx.save_for_backward(x, alpha_src, alpha_dst, out32, lse)",
           "ctx.save_for_backward(x, alpha_src, alpha_dst, out, lse)",
           why="delta = rowsum(dOut * out) read from out rounded to float16/bfloat16"),
)

# The fast correctness subset each kernel file's mutants run against (spmm.py and gat.py are both built on the
# CSR core _csr.py, so its mutants run the SpMM and GAT tests). Chosen to take seconds each under the interpreter
# while still covering every feature the catalog breaks: masks, ragged tiles, GQA, large logits, split rows, ties.
_ATTENTION = ("suites/correctness/test_attention.py::test_kernel_agrees_with_reference",
              "suites/correctness/test_attention.py::test_large_logits_do_not_overflow",
              "suites/correctness/test_attention.py::test_fully_masked_rows_give_zeros_and_zero_gradients",
              "suites/correctness/test_attention.py::test_causal_blocks_split_at_every_diagonal_offset",
              "suites/correctness/test_attention.py::test_tma_path_agrees_with_reference",
              "suites/correctness/test_attention.py::test_wide_dq_tile_agrees_with_reference")
_SPMM = ("suites/correctness/test_spmm.py::test_aggregate_matches_reference",
         "suites/correctness/test_spmm.py::test_schedule_splits_long_rows_into_segments",
         "suites/correctness/test_spmm.py::test_max_tie_rule_gives_the_gradient_to_the_first_edge",
         "suites/correctness/test_spmm.py::test_max_tie_across_edge_blocks_keeps_the_first_edge",
         "suites/correctness/test_spmm.py::test_gcnconv_with_triton_backend")
_GAT = ("suites/correctness/test_gat.py::test_gat_matches_reference",
        "suites/correctness/test_gat.py::test_large_scores_stay_finite",
        "suites/correctness/test_gat.py::test_score_gradients_bfloat16_one_channel")
SUBSETS: dict[str, tuple[str, ...]] = {
    "kernels/attention.py": _ATTENTION,
    "kernels/_csr.py": _SPMM + _GAT,
    "kernels/spmm.py": _SPMM + _GAT,
    "kernels/gat.py": _GAT,
}

# The subprocess: the mutated copy first on sys.path, proven to be the `kernels` imported, then pytest.
_BOOTSTRAP = """
import os, sys
root = os.environ["FUSEBENCH_MUTANT_ROOT"]
sys.path.insert(0, root)
import kernels
if not os.path.realpath(kernels.__file__).startswith(os.path.realpath(root)):
    sys.exit(f"mutant run imported kernels from {kernels.__file__}, not the mutated copy under {root}")
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def _locate(mutant: Mutant, source: str) -> int:
    """The offset of the mutant's anchor in ``source``; AnchorError naming it when absent."""
    offset = -1
    for _ in range(mutant.occurrence):
        offset = source.find(mutant.find, offset + 1)
        if offset < 0:
            found = source.count(mutant.find)
            raise AnchorError(f"mutant {mutant.name!r}: anchor #{mutant.occurrence} of {mutant.find!r} not in "
                              f"{mutant.file} (found {found}); the kernel changed, update fusebench/mutants.py")
    return offset


def apply(mutant: Mutant, source: str) -> tuple[str, int]:
    """(the mutated source, the 1-based line of the change)."""
    offset = _locate(mutant, source)
    mutated = source[:offset] + mutant.replace + source[offset + len(mutant.find):]
    return mutated, source.count("\n", 0, offset) + 1


def _copy_kernels(destination: Path) -> None:
    shutil.copytree(ROOT / "kernels", destination / "kernels", ignore=shutil.ignore_patterns("__pycache__"))


def _run_subset(package_root: Path, tests: Iterable[str], seed: int, timeout: float) -> tuple[int | None, str]:
    env = dict(os.environ, FUSEBENCH_MUTANT_ROOT=str(package_root), FUSEBENCH_SEED=str(seed), TRITON_INTERPRET="1",
               PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-c", _BOOTSTRAP, "-x", "-q", "--tb=line", "-rfE", "-p", "no:xdist",
               "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"no result within {timeout:.0f} s"
    return done.returncode, done.stdout + done.stderr


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def _one(mutant: Mutant, seed: int, timeout: float) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="fusebench-mutant-") as tmp:
        root = Path(tmp)
        _copy_kernels(root)
        target = root / mutant.file
        mutated, line = apply(mutant, target.read_text())
        target.write_text(mutated)
        start = time.perf_counter()
        code, output = _run_subset(root, SUBSETS[mutant.file], seed, timeout)
        seconds = time.perf_counter() - start
    if code is None:
        return Outcome(mutant, line, True, "timeout", seconds, output)
    if code == 0:
        return Outcome(mutant, line, False, "", seconds)
    failed = _FAILED.search(output)
    if failed is None:  # pytest did not get to run a test: report it, never count it as a kill
        raise RuntimeError(f"mutant {mutant.name!r}: pytest exited {code} without a failing test:\n{output[-3000:]}")
    return Outcome(mutant, line, True, failed.group(1), seconds)


def check_anchors(mutants: Iterable[Mutant] = CATALOG) -> list[str]:
    """Every anchor problem in the catalog (an empty list when each mutant applies to today's source)."""
    problems, sources = [], {}
    for mutant in mutants:
        source = sources.setdefault(mutant.file, (ROOT / mutant.file).read_text())
        try:
            mutated, _ = apply(mutant, source)
        except AnchorError as error:
            problems.append(str(error))
            continue
        if mutated == source:
            problems.append(f"mutant {mutant.name!r} changes nothing")
        if mutant.file not in SUBSETS:
            problems.append(f"mutant {mutant.name!r}: no test subset for {mutant.file}")
    return problems


def run(mutants: Iterable[Mutant] = CATALOG, *, seed: int, jobs: int = 1, timeout: float = 600.0,
        progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run each mutant against its file's subset (``jobs`` at a time); the unmutated kernels first."""
    mutants = list(mutants)
    problems = check_anchors(mutants)
    if problems:
        raise AnchorError("\n".join(problems))
    with tempfile.TemporaryDirectory(prefix="fusebench-unmutated-") as tmp:
        _copy_kernels(Path(tmp))
        tests = sorted({t for m in mutants for t in SUBSETS[m.file]})
        code, output = _run_subset(Path(tmp), tests, seed, timeout)
        if code != 0:
            raise RuntimeError(f"the unmutated kernels fail their own subset (exit {code}); fix that first:\n"
                               f"{output[-3000:]}")
    outcomes = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for outcome in pool.map(lambda m: _one(m, seed, timeout), mutants):
            outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
    return outcomes


def score(outcomes: list[Outcome]) -> float:
    """Killed mutants, in percent of those that are not equivalent."""
    judged = [o for o in outcomes if not o.mutant.equivalent]
    return 100.0 * sum(o.killed for o in judged) / len(judged) if judged else float("nan")


def _verdict(o: Outcome) -> str:
    if o.killed:
        return o.killed_by
    return "EQUIVALENT: " + o.mutant.equivalent if o.mutant.equivalent else "SURVIVED"


def format_row(o: Outcome) -> str:
    """One outcome as a progress line, printed as soon as its mutant has run."""
    return f"{o.mutant.name}  {o.mutant.file}:{o.line}  {o.seconds:.1f} s  {_verdict(o)}"


def format_table(outcomes: list[Outcome]) -> str:
    """Every outcome, then the mutation score."""
    from fusebench.tables import text_table

    table = text_table([(o.mutant.name, f"{o.mutant.file}:{o.line}", round(o.seconds, 1), _verdict(o))
                        for o in outcomes], ["mutant", "file:line", "seconds", "killed by"], empty="(no mutant ran)",
                       floatfmt=".1f")
    killed = sum(o.killed for o in outcomes)
    equivalent = sum(bool(o.mutant.equivalent) and not o.killed for o in outcomes)
    total = sum(o.seconds for o in outcomes)
    return (f"{table}\nmutation score {score(outcomes):.1f}%: {killed} of {len(outcomes)} killed"
            f"{f', {equivalent} equivalent' if equivalent else ''}; {total:.0f} s of test time")


def format_catalog(catalog: Iterable[Mutant]) -> str:
    """`fusebench mutants --list`: each mutant, the file it changes and the fault it stands for."""
    from fusebench.tables import text_table

    return text_table([(m.name, m.file, m.why) for m in catalog], ["mutant", "file", "why"], empty="(no mutant)")


def store_rows(outcomes: list[Outcome], ident, run_id: str, timestamp: str, seed: int) -> list[dict]:
    """Rows for the results store (suite ``mutation``): the score, and per mutant killed (0/1) and seconds."""
    from fusebench.runner import _identity_columns

    base = {"run_id": run_id, "timestamp": timestamp, "suite": "mutation", "provider": "triton", "mode": "cpu",
            "dtype": "", "size": "interpreter", **_identity_columns(ident)}
    value = lambda v: {"p20": float(v), "p50": float(v), "p80": float(v)}
    survivors = [o.mutant.name for o in outcomes if not o.killed]
    rows = [{**base, "case": "kernels", "metric": "mutation_score", "unit": "%", **value(score(outcomes)),
             "samples": len(outcomes), "note": f"seed {seed}; survivors: {', '.join(survivors) or 'none'}"}]
    for o in outcomes:
        where = f"{o.mutant.file}:{o.line}"
        rows.append({**base, "case": o.mutant.name, "shape": where, "metric": "killed", "unit": "bool",
                     **value(o.killed), "samples": 1, "note": o.killed_by})
        rows.append({**base, "case": o.mutant.name, "shape": where, "metric": "seconds", "unit": "s",
                     **value(o.seconds), "samples": 1})
    return rows


def latest_score(frame, commit: str | None = None) -> float | None:
    """The most recent stored mutation score (of ``commit`` when given), or None."""
    if frame.empty or "metric" not in frame:
        return None
    rows = frame[(frame["suite"] == "mutation") & (frame["metric"] == "mutation_score")]
    if commit is not None:
        rows = rows[rows["commit"].astype(str) == commit]
    if rows.empty:
        return None
    return float(rows.sort_values("timestamp").iloc[-1]["p50"])
