"""`python -m fvt ...` (also what torchrun launches: `torchrun ... -m fvt train ...`)."""

import sys

from .cli import main

sys.exit(main())
