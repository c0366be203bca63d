"""Detects the ``kernels`` import-name clash before anything imports a kernel.

fusebench's top-level ``kernels/`` shares its import name with the Hugging Face ``kernels``
distribution. ``kernels/__init__.py`` refuses to import when that distribution is installed (ours
would hide theirs). This module catches the reverse: theirs found first, so ``import kernels`` would
load a foreign package and ``kernels.attention`` would fail with a misleading ModuleNotFoundError.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path

OUR_KERNELS = Path(__file__).resolve().parent.parent / "kernels"

ADVICE = (
    "Uninstall it from this environment (`pip uninstall kernels`) or run fusebench in its own virtual "
    "environment (`bash .ci/setup` makes one in .venv); fusebench does not use hub kernels."
)


class KernelsNamespaceClash(ImportError):
    """The import name ``kernels`` does not resolve to fusebench's kernels/ directory."""


def check_kernels_namespace() -> None:
    """Raise :class:`KernelsNamespaceClash` with what to do if ``kernels`` is not ours or is shared."""
    spec = importlib.util.find_spec("kernels")
    if spec is None or spec.origin is None:
        raise KernelsNamespaceClash(f"fusebench's kernels package is not importable (expected {OUR_KERNELS})")
    found = Path(spec.origin).resolve().parent
    try:
        foreign = metadata.distribution("kernels")
    except metadata.PackageNotFoundError:
        foreign = None
    if found != OUR_KERNELS:
        where = f" (distribution `kernels` {foreign.version})" if foreign else ""
        raise KernelsNamespaceClash(
            f"`import kernels` resolves to {found}{where}, not fusebench's {OUR_KERNELS}: another package "
            f"named `kernels` hides fusebench's kernels. {ADVICE}"
        )
    if foreign is not None:
        raise KernelsNamespaceClash(
            f"the `kernels` distribution {foreign.version} (Hugging Face hub kernels) is installed next to "
            f"fusebench's kernels/, and both use the import name `kernels`. {ADVICE}"
        )
