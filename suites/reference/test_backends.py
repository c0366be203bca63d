"""reference/backends.py: one registry for every seam's backends.

A backend is registered, or declared by an entry point and imported on first use; an unknown or unloadable one
raises one error naming it and the known ones; listing imports nothing (no Triton); a bare checkout reads the
declarations from pyproject.toml, and they are the ones an install publishes.
"""

import re
import subprocess
import sys
import textwrap

import pytest
import torch

from fusebench.inputs import random_tensor
from reference import backends
from reference.attention import ATTENTION_BACKENDS, scaled_dot_product_attention
from reference.backends import Backends, UnknownBackend
from reference.gnn import AGGREGATE_BACKENDS, ATTENTION_AGGREGATE_BACKENDS, aggregate
from reference.graph_embedding import READOUT_BACKENDS, readout
from reference.graph_generators import make_graph

SEAMS = {"attention": ATTENTION_BACKENDS, "aggregate": AGGREGATE_BACKENDS,
         "attention_aggregate": ATTENTION_AGGREGATE_BACKENDS, "readout": READOUT_BACKENDS}


@pytest.fixture
def declared(monkeypatch):
    """Declare extra entry points for one test: ``declared(seam, name, "module:function")``."""
    table = {seam: dict(entries) for seam, entries in backends.declarations().items()}
    monkeypatch.setattr(backends, "declarations", lambda: table)

    def declare(seam, name, target):
        table.setdefault(seam, {})[name] = target

    return declare


def test_every_seam_has_the_reference_backend_and_the_declared_kernel():
    for seam, registry in SEAMS.items():
        assert registry.seam == seam
        assert "reference" in registry.registered
        assert "triton" in registry.names(), seam
    assert {"reference", "sdpa"} <= set(ATTENTION_BACKENDS.registered)


def test_the_declared_kernels_are_the_kernel_modules_functions():
    for seam, registry in SEAMS.items():
        target = backends.declarations()[seam]["triton"]
        module_name, _, function = target.partition(":")
        assert module_name.startswith("kernels.") and callable(registry.get("triton")), (seam, target)


def test_a_bare_checkout_reads_the_same_declarations_from_pyproject(monkeypatch):
    """The GPU machine runs the checkout on PYTHONPATH, without installing it: no metadata, same backends. An
    install older than pyproject.toml (`.ci/setup` reinstalls) would differ here."""
    installed = backends.declarations()
    from_pyproject = {group.removeprefix(backends.ENTRY_POINT_GROUP + "."): table
                      for group, table in backends._pyproject_entry_points().items()
                      if group.startswith(backends.ENTRY_POINT_GROUP + ".")}
    assert from_pyproject == {seam: {"triton": installed[seam]["triton"]} for seam in SEAMS}

    def not_installed(name):
        raise backends.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(backends.metadata, "distribution", not_installed)
    monkeypatch.setattr(backends.metadata, "distributions", lambda: [])
    backends.declarations.cache_clear()
    try:
        assert backends.declarations() == from_pyproject
    finally:
        monkeypatch.undo()
        backends.declarations.cache_clear()


def test_an_unknown_backend_names_itself_the_seam_and_the_known_ones(seed):
    graph = make_graph("erdos_renyi", 10, seed=seed)
    x = random_tensor((10, 4), seed=seed, dtype=torch.float64)
    with pytest.raises(UnknownBackend, match=r"backend must be one of \['reference', 'triton'\] for aggregate, "
                                             r"got 'cuda'"):
        aggregate(graph, x, backend="cuda")
    with pytest.raises(ValueError, match=r"backend must be one of \['reference', 'sdpa', 'triton'\] for attention"):
        scaled_dot_product_attention(x[None, None], x[None, None], x[None, None], backend="cuda")
    with pytest.raises(UnknownBackend, match="for readout, got 'cuda'"):
        readout(x, backend="cuda")


@pytest.mark.parametrize(("target", "why"), [
    ("kernels.does_not_exist:aggregate", r"ModuleNotFoundError: No module named 'kernels.does_not_exist'"),
    ("broken_graph_plugin:aggregate", r"ModuleNotFoundError: No module named 'fusebench_module_that_does_not_exist'"),
    ("reference.gnn:no_such_function", r"AttributeError: .*'no_such_function'"),
])
def test_a_declared_backend_that_does_not_load_is_listed_and_says_why_on_use(seed, declared, monkeypatch, tmp_path,
                                                                            target, why):
    (tmp_path / "broken_graph_plugin.py").write_text("import fusebench_module_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(AGGREGATE_BACKENDS, "registered", dict(AGGREGATE_BACKENDS.registered))
    declared("aggregate", "phantom", target)
    assert "phantom" in AGGREGATE_BACKENDS.names()  # declared: listing does not import it
    graph = make_graph("grid_2d", 9, seed=seed)
    expected = (rf"backend 'phantom' for aggregate is declared as '{re.escape(target)}' but does "
                rf"not load here \({why}\); the backends known: \[.*'phantom'.*\]")
    with pytest.raises(UnknownBackend, match=expected):
        aggregate(graph, random_tensor((9, 2), seed=seed), backend="phantom")


def test_an_entry_point_must_name_a_function(declared, monkeypatch):
    monkeypatch.setattr(AGGREGATE_BACKENDS, "registered", dict(AGGREGATE_BACKENDS.registered))
    declared("aggregate", "module-only", "reference.gnn")
    with pytest.raises(UnknownBackend, match="names no function"):
        AGGREGATE_BACKENDS.get("module-only")


def test_a_declared_backend_is_imported_on_first_use_only(seed, declared, monkeypatch, tmp_path):
    (tmp_path / "counting_plugin.py").write_text(textwrap.dedent("""
        IMPORTS = []
        IMPORTS.append(1)

        def readout(x, batch, *, num_graphs, reduce):
            return x.new_zeros(num_graphs, x.shape[1])
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "counting_plugin", raising=False)
    monkeypatch.setattr(READOUT_BACKENDS, "registered", dict(READOUT_BACKENDS.registered))
    declared("readout", "counting", "counting_plugin:readout")
    assert "counting" in READOUT_BACKENDS.names() and "counting_plugin" not in sys.modules
    x = random_tensor((4, 2), seed=seed, dtype=torch.float64)
    assert readout(x, backend="counting").shape == (1, 2) and sys.modules["counting_plugin"].IMPORTS == [1]
    assert READOUT_BACKENDS.registered["counting"] is sys.modules["counting_plugin"].readout  # loaded once, kept
    readout(x, backend="counting")
    assert sys.modules["counting_plugin"].IMPORTS == [1]


def test_registration_checks_the_function_and_can_be_undone():
    registry = Backends("toy")
    with pytest.raises(TypeError, match="a toy backend must be callable, got int"):
        registry.register("one", 1)
    registry.register("one", abs)
    assert registry.registered["one"] is abs and registry.get("one")(-3) == 3 and "one" in registry.names()
    registry.unregister("one")
    assert "one" not in registry.names()


def test_an_observer_sees_every_dispatch_and_chooses_what_runs(seed):
    seen = []

    def observer(seam, name, fn):
        seen.append((seam, name))
        return lambda *args, **kwargs: fn(*args, **kwargs) * 2

    x = random_tensor((6, 3), seed=seed, dtype=torch.float64)
    previous = backends.observe(observer)
    try:
        doubled = readout(x)
    finally:
        assert backends.observe(previous) is observer
    assert seen == [("readout", "reference")]
    assert torch.equal(doubled, 2 * readout(x))


def test_listing_providers_imports_no_triton():
    """`fusebench run`'s provider list names the Triton backends without importing a kernel module (or Triton)."""
    code = textwrap.dedent("""
        import sys
        from fusebench.providers import providers
        names = [(p.suite, p.name) for p in providers()]
        assert ("attention", "triton") in names and ("graph", "triton") in names, names
        loaded = sorted(m for m in sys.modules if m == "triton" or m.startswith(("triton.", "kernels")))
        assert not loaded, loaded
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
