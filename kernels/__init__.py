"""fusebench's fused Triton kernels, one op family per module (attention.py, spmm.py, gat.py).

Shared parts live in private modules with public names: ``_csr.py`` (the CSR core that spmm.py and gat.py
are both built on), ``_common.py`` (interpreter flag, device check, int32 limit, Triton dtype names) and
``_compile.py`` (what ``fusebench inspect`` compiles).

The import name ``kernels`` is also taken by the Hugging Face ``kernels`` distribution, which
transformers users install for hub kernels. Two packages cannot share one import name in one
environment: whichever comes first on ``sys.path`` silently hides the other. Importing this package
therefore refuses to run next to that distribution (see ``fusebench.namespace`` for the check that
also catches the reverse case, theirs hiding ours).
"""

from importlib import metadata as _metadata

__fusebench__ = True  # marks this package as fusebench's, for fusebench.namespace


def _refuse_foreign_kernels_distribution() -> None:
    try:
        foreign = _metadata.distribution("kernels")
    except _metadata.PackageNotFoundError:
        return
    raise ImportError(
        f"fusebench's `kernels` package clashes with the installed `kernels` distribution "
        f"(version {foreign.version}, the Hugging Face hub-kernels package, found at {foreign.locate_file('')}): "
        "both use the import name `kernels`, so one silently hides the other. "
        "Uninstall it from this environment (`pip uninstall kernels`) or run fusebench in its own virtual "
        "environment (`bash .ci/setup` makes one in .venv); fusebench does not use hub kernels."
    )


_refuse_foreign_kernels_distribution()
