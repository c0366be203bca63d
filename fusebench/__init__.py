"""fusebench: correctness and benchmark harness for fused LLM/VLM kernels.

Importing the package is cheap (no torch, no CUDA query); the pieces live in submodules:
``agreement`` (the numerical policy), ``inputs`` (random inputs, poison, guard zones),
``coverage`` (what `fusebench list` prints), ``cli``.
"""

__version__ = "0.1.0"
