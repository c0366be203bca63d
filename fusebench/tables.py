"""The plain-text tables the CLI prints: pandas holds the rows, tabulate's "simple" layout (pandas'
``to_markdown``) sets them out, text left-aligned as a reader scans it, numbers right-aligned.

Where tabulate is not installed (`fusebench gpu-check` on a bare device needs only torch, triton, pandas and
pytest), pandas' own ``to_string`` lays the same table out, every cell right-aligned.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["text_table"]


def text_table(rows: Sequence[Sequence], columns: Sequence[str], *, empty: str = "(nothing to show)",
               numbers: bool = True, **layout) -> str:
    """``rows`` under ``columns`` with a dashed rule below the header; ``empty`` when there is no row.

    ``numbers=False`` keeps every cell as written (e.g. ``"1,2"`` or ``"007"``, which would otherwise be read as
    numbers and right-aligned or reformatted); ``layout``: tabulate's options, e.g. ``floatfmt=".1f"``.
    """
    if not rows:
        return empty
    import pandas as pd

    frame = pd.DataFrame(list(rows), columns=list(columns))
    try:
        return frame.to_markdown(index=False, tablefmt="simple", disable_numparse=not numbers, **layout)
    except ImportError:  # no tabulate
        return frame.to_string(index=False)
