"""``python -m reason2rank.cli ...`` (used with torchrun / accelerate launch)."""

import sys

from reason2rank.cli.main import main

sys.exit(main())
