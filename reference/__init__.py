"""Plain PyTorch reference implementations: the spec every kernel is checked against.

One module family per file; everything runs in float64 as well as lower precision. The hot core of
each module (attention, neighbour aggregation) goes through one seam function with a ``backend=``
argument. This package imports nothing from ``kernels/``.
"""
