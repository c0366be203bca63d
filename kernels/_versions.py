"""The installed triton's (major, minor) version, for the config rules that differ between compilers.

Register allocation changes between triton releases: a tile one release compiles without spills, another
may spill. The lent GPU machine runs triton 3.6 while this project develops on 3.9, so the rules that prune
configs (`_fits` in attention.py, `_edge_tile` in gat.py) consult this, each citing what
`fusebench inspect` measured.
"""

import re

import triton

TRITON = tuple(int(part) for part in re.findall(r"\d+", triton.__version__)[:2])  # e.g. (3, 6)
