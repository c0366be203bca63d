"""Run fusebench's fused kernels inside models users already have (transformers, PyG).

Each submodule imports its framework on import, so ``import fusebench`` stays cheap:

* :mod:`fusebench.integrations.transformers`: the Triton attention as a transformers attention
  implementation (``attn_implementation="fusebench"``).
"""
