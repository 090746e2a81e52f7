"""``python -m rtcs``."""

import sys

from rtcs.cli import main

sys.exit(main())
