"""One backend registry for every seam: the functions a reference module's hot core can be swapped for.

A seam is the one function a reference's hot core runs through (``reference.attention.scaled_dot_product_attention``;
``reference.gnn.aggregate`` and ``attention_aggregate``; ``reference.graph_embedding.readout``). Its ``backend=``
argument names an implementation in that seam's :class:`Backends`. A backend gets there in one of two ways:

* :meth:`Backends.register` at run time: the references register their own (``"reference"``, ``"sdpa"``), tests
  register doubles;
* an entry point in the group ``fusebench.backends.<seam>`` (the project's own are in pyproject.toml's
  ``[project.entry-points]``: ``triton = "kernels.attention:..."``), imported on first use only. So nothing in
  ``reference/`` names a kernel module, and listing the backends (:meth:`Backends.names`) imports nothing: no Triton.

A bare checkout on ``PYTHONPATH`` (the GPU machine and ``.ci/device-versions`` run one) has no installed metadata;
there the declarations are read from the checkout's pyproject.toml, the same table an install would publish.

An unknown backend, or a declared one that does not load here, raises :class:`UnknownBackend` naming the seam, the
backend, why it did not load, and the backends known.
"""

from __future__ import annotations

import functools
import importlib
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

__all__ = ["Backends", "UnknownBackend", "declarations", "observe", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "fusebench.backends"  # one group per seam: "fusebench.backends.<seam>"
_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"  # a bare checkout's declarations

# A hook the coverage map installs (fusebench.coverage): (seam, backend name, function) -> the function to call.
_observer: Callable[[str, str, Callable], Callable] | None = None


class UnknownBackend(ValueError):
    """``backend=`` names nothing this seam knows, or a declared backend that does not load here."""


@functools.cache
def declarations() -> dict[str, dict[str, str]]:
    """``{seam: {backend: "module:function"}}`` from the entry points of the installed distributions, and from the
    checkout's pyproject.toml where fusebench itself is not installed (a bare checkout on PYTHONPATH)."""
    found: dict[str, dict[str, str]] = {}
    prefix = ENTRY_POINT_GROUP + "."
    for distribution in metadata.distributions():
        for entry in distribution.entry_points:
            if entry.group.startswith(prefix):
                found.setdefault(entry.group.removeprefix(prefix), {})[entry.name] = entry.value
    try:
        metadata.distribution("fusebench")
    except metadata.PackageNotFoundError:
        for group, table in _pyproject_entry_points().items():
            if group.startswith(prefix):
                found.setdefault(group.removeprefix(prefix), {}).update(table)
    return found


def _pyproject_entry_points() -> dict[str, dict[str, str]]:
    try:
        project = tomllib.loads(_PYPROJECT.read_text()).get("project", {})
    except FileNotFoundError:  # installed as a wheel without its metadata: nothing declared
        return {}
    return project.get("entry-points", {})


def observe(hook: Callable[[str, str, Callable], Callable] | None) -> Callable | None:
    """Route every seam's dispatch through ``hook(seam, name, fn) -> fn`` (None: straight to ``fn``) and return the
    hook it replaces, to be put back. The coverage map's recorder wraps each backend call to note who ran it."""
    global _observer
    previous, _observer = _observer, hook
    return previous


class Backends:
    """The backends of one seam: name -> function, loaded from an entry point on first use if not registered."""

    def __init__(self, seam: str):
        self.seam = seam
        self.registered: dict[str, Callable] = {}  # loaded or registered so far

    def register(self, name: str, fn: Callable) -> None:
        """Make ``fn`` available as ``backend=name`` (replacing a declaration or earlier registration of ``name``)."""
        if not callable(fn):
            raise TypeError(f"a {self.seam} backend must be callable, got {type(fn).__name__}")
        self.registered[name] = fn

    def unregister(self, name: str) -> None:
        self.registered.pop(name, None)

    def names(self) -> list[str]:
        """Every backend known here: registered, or declared by an entry point (not imported to list it)."""
        return sorted(set(self.registered) | set(declarations().get(self.seam, {})))

    def get(self, name: str) -> Callable:
        """The function for ``backend=name``, importing its entry point on first use."""
        fn = self.registered.get(name)
        if fn is None:
            target = declarations().get(self.seam, {}).get(name)
            if target is None:
                raise UnknownBackend(f"backend must be one of {self.names()} for {self.seam}, got {name!r}")
            fn = self.registered[name] = self._load(name, target)
        return fn if _observer is None else _observer(self.seam, name, fn)

    def _load(self, name: str, target: str) -> Callable:
        module_name, _, attribute = target.partition(":")
        try:
            fn = importlib.import_module(module_name)
            for part in filter(None, attribute.split(".")):
                fn = getattr(fn, part)
        except Exception as error:  # whatever stops the import, the caller learns which backend and why
            raise UnknownBackend(
                f"backend {name!r} for {self.seam} is declared as {target!r} but does not load here "
                f"({type(error).__name__}: {error}); the backends known: {self.names()}") from error
        if not attribute or not callable(fn):
            raise UnknownBackend(f"backend {name!r} for {self.seam} is declared as {target!r}, which names no "
                                 "function (an entry point must be 'module:function')")
        return fn

    def __repr__(self) -> str:
        return f"Backends({self.seam!r}: {', '.join(self.names())})"
