"""`fusebench list` (fusebench/coverage.py): every seed section appears; backends are what tests ran.

The recorder is exercised directly (a seam call credits the documented modules on its call stack), and the
rule of `fusebench list --check` is exercised on recordings built here, so that it is seen to fail.
"""

import json
import subprocess
import sys

import pytest
import torch

from fusebench.coverage import (
    KERNEL_BACKEND,
    MODULES,
    ORACLE_KINDS,
    SeamRecorder,
    backends_by_module,
    check,
    coverage_rows,
    merge,
    uncovered_sections,
)
from fusebench.inputs import random_tensor


def test_every_seed_section_is_covered_by_some_module():
    assert uncovered_sections() == []
    sections = [s for m in MODULES for s in m.sections]
    assert sorted(set(sections)) == list(range(1, 31))


def test_every_oracle_has_one_of_the_four_kinds():
    assert {m.kind for m in MODULES} <= set(ORACLE_KINDS)
    assert ORACLE_KINDS == ("library", "closed form", "hand-computed case", "properties only")


def test_status_is_measured_and_backends_come_only_from_a_recording():
    for row in coverage_rows(None):
        assert row.backends == []  # nothing recorded: nothing claimed
        if row.status == "done":
            module_name, _, attribute = row.reference.partition(":")
            module = __import__(module_name, fromlist=[attribute])
            assert hasattr(module, attribute), row.reference
    recording = {"pairs": [{"module": "self-attention", "backend": "sdpa", "calls": 1, "tests": ["t"]}]}
    rows = {r.name: r for r in coverage_rows(recording)}
    assert rows["self-attention"].backends == ["sdpa"] and rows["multi-head attention"].backends == []


@pytest.fixture
def recorder():
    recorder = SeamRecorder().install()
    recorder.current_test = "this test"
    yield recorder
    recorder.uninstall()


def test_a_seam_call_credits_every_documented_module_on_its_stack(recorder, seed):
    from reference.fusion import CoAttentionTransformer, FusionConfig

    config = FusionConfig(vocab_size=11, text_dim=8, image_dim=12, num_heads=2, num_fusion_layers=1)
    model = CoAttentionTransformer(config).double()
    model(random_tensor((1, 3, 8), seed=seed, dtype=torch.float64),
          random_tensor((1, 5, 12), seed=seed + 1, dtype=torch.float64))
    credited = backends_by_module(recorder.as_json())
    for name in ("two-stream co-attention transformer", "multi-head attention", "scaled dot-product attention"):
        assert credited.get(name) == ["reference"], (name, credited)
    assert "multimodal fusion model" not in credited  # not on the stack: not credited
    pair = next(p for p in recorder.as_json()["pairs"] if p["module"] == "multi-head attention")
    assert pair["tests"] == ["this test"] and pair["calls"] == 4  # 2 cross + 2 self attentions


def test_graph_seams_are_recorded_too(recorder, seed):
    from reference.gnn import GCNConv
    from reference.graph import Graph

    edges = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    conv = GCNConv(3, 2).double()
    conv(Graph(edges, num_nodes=4), random_tensor((4, 3), seed=seed, dtype=torch.float64))
    credited = backends_by_module(recorder.as_json())
    assert credited.get("graph convolution (GCN)") == ["reference"]
    assert {s["seam"] for s in recorder.as_json()["seams"]} == {"aggregate"}


def test_a_recorder_gives_the_seams_back_to_the_one_it_replaced(seed):
    """The session's recorder (suites/conftest.py) keeps recording after a test's own recorder is done."""
    from reference.graph_embedding import readout

    outer = SeamRecorder().install()
    inner = SeamRecorder().install()
    inner.uninstall()
    readout(random_tensor((3, 2), seed=seed, dtype=torch.float64))
    outer.uninstall()
    assert [s["seam"] for s in outer.as_json()["seams"]] == ["readout"] and inner.as_json()["seams"] == []


def test_recordings_of_xdist_workers_merge():
    a = {"pairs": [{"module": "m", "backend": "triton", "calls": 2, "tests": ["t1"]}],
         "seams": [{"seam": "attention", "backend": "triton", "calls": 2}]}
    b = {"pairs": [{"module": "m", "backend": "triton", "calls": 3, "tests": ["t2", "t1"]},
                   {"module": "n", "backend": "reference", "calls": 1, "tests": ["t3"]}],
         "seams": [{"seam": "attention", "backend": "triton", "calls": 3}]}
    merged = merge([a, b])
    assert merged["pairs"][0] == {"module": "m", "backend": "triton", "calls": 5, "tests": ["t1", "t2"]}
    assert merged["seams"] == [{"seam": "attention", "backend": "triton", "calls": 5}]
    assert backends_by_module(merged) == {"m": ["triton"], "n": ["reference"]}


def _full_recording():
    return {"commit": "abc", "pairs": [{"module": m.name, "backend": KERNEL_BACKEND, "calls": 1, "tests": ["t"]}
                                       for m in MODULES if m.core]}


def test_check_passes_a_recording_where_every_kernel_section_ran_its_kernel():
    assert check(_full_recording(), current_commit="abc") == []


def test_check_fails_without_a_recording_or_with_another_commits():
    assert any("no recording" in p for p in check(None))
    assert any("HEAD is def" in p for p in check(_full_recording(), current_commit="def"))


def test_check_fails_a_kernel_section_no_test_ran_with_its_kernel():
    recording = _full_recording()
    recording["pairs"] = [p for p in recording["pairs"] if p["module"] != "image-text fusion classifier"]
    recording["pairs"].append({"module": "image-text fusion classifier", "backend": "reference", "calls": 1,
                               "tests": ["t"]})
    problems = check(recording, current_commit="abc")
    assert len(problems) == 1 and "image-text fusion classifier (sections 24) claims the triton kernel" in problems[0]
    assert "(tests ran: reference)" in problems[0]


def test_cli_list_json_and_table():
    out = subprocess.run([sys.executable, "-m", "fusebench.cli", "list", "--json"], capture_output=True,
                         text=True, check=True).stdout
    rows = json.loads(out)
    assert sorted({s for r in rows for s in r["sections"]}) == list(range(1, 31))
    assert {"sections", "reference", "oracle", "kind", "backends", "status"} <= set(rows[0])
    table = subprocess.run([sys.executable, "-m", "fusebench.cli", "list"], capture_output=True, text=True,
                           check=True).stdout
    assert "sections covered: 30 of 30" in table and "oracle kind" in table and "tested backends" in table


def test_a_backend_registered_by_a_test_is_not_credited(recorder, monkeypatch, seed):
    from reference import attention
    from reference.attention import MultiHeadAttention

    def spy(q, k, v, **kwargs):  # a test double, defined in a test module
        return attention.ATTENTION_BACKENDS.get("reference")(q, k, v, **kwargs)

    monkeypatch.setitem(attention.ATTENTION_BACKENDS.registered, "spy", spy)
    MultiHeadAttention(8, 2, backend="spy").double()(random_tensor((1, 3, 8), seed=seed, dtype=torch.float64))
    assert backends_by_module(recorder.as_json()) == {"multi-head attention": ["reference"],
                                                     "scaled dot-product attention": ["reference"]}
