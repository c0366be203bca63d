"""Run fusebench's fused kernels inside models users already have (transformers, PyG).

Each submodule imports its framework on import, so ``import fusebench`` stays cheap:

* :mod:`fusebench.integrations.transformers`: the Triton attention as a transformers attention
  implementation (``attn_implementation="fusebench"``).
* :mod:`fusebench.integrations.pyg`: drop-in ``GCNConv`` / ``GATConv`` with PyG's arguments and state
  dicts on the fused graph kernels, and ``swap_convs`` to move a PyG model onto them.
"""
