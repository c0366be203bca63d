"""Pairwise case tables: every value of each factor meets every value of every other factor in some row.

A covering array of strength two (the all-pairs strategy) instead of the full product keeps the interpreter
tier fast while each factor still meets every other one: its rows grow with the two largest factors, the
product with all of them. The correctness suites build their kernel case tables with
:func:`pairwise` and check them with :func:`missing_pairs`.
"""

from __future__ import annotations

import itertools

__all__ = ["pairwise", "missing_pairs"]


def pairwise(factors: dict[str, list]) -> list[dict]:
    """A small deterministic table in which every pair of values of any two factors appears in some row.

    In-parameter-order growth (Lei and Tai's IPO strategy): rows start as the product of the first two factors;
    each further factor is added column by column, giving each row the value that covers the most still-missing
    pairs, and rows are appended for the pairs left over (their other entries take each factor's first value).
    """
    names = list(factors)
    if len(names) < 2:
        return [{name: value} for name in names for value in factors[name]]
    rows = [list(pair) for pair in itertools.product(factors[names[0]], factors[names[1]])]
    for k in range(2, len(names)):
        values = factors[names[k]]
        missing = {(i, a, b) for i in range(k) for a in range(len(factors[names[i]])) for b in range(len(values))}
        index = [{v: n for n, v in enumerate(factors[name])} for name in names[:k]]

        def covered(row, b, index=index, k=k):
            return {(i, index[i][row[i]], b) for i in range(k)}

        for row in rows:
            best = max(range(len(values)), key=lambda b, row=row: (len(covered(row, b) & missing), -b))
            row.append(values[best])
            missing -= covered(row, best)
        for i, a, b in sorted(missing):
            row = [factors[name][0] for name in names[:k]] + [values[b]]
            row[i] = factors[names[i]][a]
            rows.append(row)
    return [dict(zip(names, row, strict=True)) for row in rows]


def missing_pairs(table: list[dict], factors: dict[str, list]) -> list[tuple[str, str, str, str]]:
    """The ``(factor, value, factor, value)`` pairs of ``factors`` that no row of ``table`` holds (values as str)."""
    seen = {(a, str(row[a]), b, str(row[b])) for row in table for a, b in itertools.combinations(factors, 2)}
    return sorted((a, str(x), b, str(y)) for a, b in itertools.combinations(factors, 2)
                  for x in factors[a] for y in factors[b] if (a, str(x), b, str(y)) not in seen)
