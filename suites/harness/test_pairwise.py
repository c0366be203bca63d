"""fusebench/pairwise.py: the case tables cover every pair of factor values, and a missing pair is seen."""

import math

import pytest

from fusebench.pairwise import missing_pairs, pairwise

FACTOR_SETS = [
    {"a": list(range(8)), "b": list(range(4)), "c": list(range(3)), "d": [0, 1], "e": [0, 1, 2]},
    {"only": [1, 2, 3], "other": ["x"]},  # a factor with a single value
    {"dtype": ["f32", "f16", "bf16"], "size": [1, 17, 37], "mask": [None, "causal"], "flag": [True, False]},
]


@pytest.mark.parametrize("factors", FACTOR_SETS, ids=["five", "single-value", "mixed"])
def test_every_pair_is_covered_in_fewer_rows_than_the_product(factors):
    table = pairwise(factors)
    assert missing_pairs(table, factors) == []
    assert all(set(row) == set(factors) for row in table)
    largest = sorted((len(values) for values in factors.values()), reverse=True)
    assert len(table) < math.prod(largest) or len(factors) == 2
    assert len(table) >= largest[0] * largest[1]  # no table can do with fewer: the two largest factors' pairs


def test_a_table_without_one_row_misses_its_pairs():
    factors = FACTOR_SETS[0]
    table = pairwise(factors)
    assert pairwise(factors) == table  # deterministic: the same ids in every run and on every worker
    dropped = table[0]
    missing = missing_pairs(table[1:], factors)
    assert missing and all(dropped[a] == int(x) and dropped[b] == int(y) for a, x, b, y in missing)
