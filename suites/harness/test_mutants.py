"""fusebench/mutants.py: the catalog applies to today's kernels, anchors fail loudly, the score is stored.

The catalog itself runs behind the `mutation` marker (`pytest -m mutation`, or `fusebench mutants`): every
mutant must be killed by the fast correctness subset, or carry a written reason why it is equivalent.
"""

import dataclasses
import re

import pytest

from fusebench import mutants
from fusebench.mutants import CATALOG, SUBSETS, AnchorError, Mutant, Outcome


def test_the_catalog_has_at_least_twenty_realistic_faults_in_every_kernel_file():
    assert len(CATALOG) >= 20
    assert {m.file for m in CATALOG} == {"kernels/attention.py", "kernels/_csr.py", "kernels/spmm.py",
                                         "kernels/gat.py"}
    assert len({m.name for m in CATALOG}) == len(CATALOG)
    assert all(m.why for m in CATALOG)


def test_every_anchor_applies_to_the_current_kernels():
    # A kernel change that moves an anchored line fails here, in the default run, naming the mutant.
    assert mutants.check_anchors() == []


def test_every_subset_test_exists():
    for tests in SUBSETS.values():
        for node in tests:
            path, _, name = node.partition("::")
            assert re.search(rf"^def {name}\(", (mutants.ROOT / path).read_text(), re.MULTILINE), node


def test_a_missing_anchor_is_reported_with_the_mutant_and_file():
    mutant = Mutant("ghost", "kernels/attention.py", "this text is not in the kernel", "x", why="none")
    with pytest.raises(AnchorError, match=r"mutant 'ghost': anchor #1 of .* not in kernels/attention.py \(found 0\)"):
        mutants.apply(mutant, "source without it\n")
    assert "mutant 'ghost'" in mutants.check_anchors([mutant])[0]


def test_apply_changes_the_chosen_occurrence_and_reports_its_line():
    source = "a = 1\nqk = s * 2\nb = 2\nqk = s * 2\n"
    mutant = Mutant("second", "kernels/attention.py", "qk = s * 2", "qk = 2", occurrence=2)
    mutated, line = mutants.apply(mutant, source)
    assert line == 4 and mutated == "a = 1\nqk = s * 2\nb = 2\nqk = 2\n"


def _outcomes():
    killed = Outcome(CATALOG[0], 190, True, "suites/correctness/test_attention.py::test_x[a]", 3.5)
    survivor = Outcome(CATALOG[1], 190, False, "", 40.0)
    equivalent = Outcome(dataclasses.replace(CATALOG[2], equivalent="no test can tell"), 265, False, "", 40.0)
    return [killed, survivor, equivalent]


def test_score_counts_killed_among_the_non_equivalent_and_the_table_says_so():
    outcomes = _outcomes()
    assert mutants.score(outcomes) == 50.0
    table = mutants.format_table(outcomes)
    assert "kernels/attention.py:190" in table and "SURVIVED" in table and "EQUIVALENT: no test can tell" in table
    assert "mutation score 50.0%: 1 of 3 killed, 1 equivalent" in table


def test_the_score_goes_to_the_store_and_back(tmp_path):
    from fusebench.device import identity
    from fusebench.store import ResultsStore

    store = ResultsStore(tmp_path)
    ident = identity()
    store.append(mutants.store_rows(_outcomes(), ident, "run-1", "2026-01-01T00:00:00Z", seed=7))
    frame = store.read(strict=True).frame
    assert mutants.latest_score(frame, ident.commit) == 50.0
    assert mutants.latest_score(frame, "another-commit") is None
    killed = frame[(frame["metric"] == "killed")]
    assert sorted(killed["p50"].tolist()) == [0.0, 0.0, 1.0]


@pytest.mark.mutation
def test_every_mutant_is_killed():
    from fusebench.inputs import run_seed

    outcomes = mutants.run(seed=run_seed(), jobs=2)
    print(mutants.format_table(outcomes))
    survivors = [o.mutant.name for o in outcomes if not o.killed and not o.mutant.equivalent]
    assert not survivors, f"mutants no test kills: {survivors}"
