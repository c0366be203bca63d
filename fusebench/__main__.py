"""`python3 -m fusebench ...`: the CLI from a bare checkout, with no install (the lent GPU machine's way)."""

import sys

from fusebench.cli import main

sys.exit(main())
