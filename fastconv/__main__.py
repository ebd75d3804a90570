"""``python -m fastconv``: the same command line as ``fastconv``."""
import sys

from .cli import main

sys.exit(main())
