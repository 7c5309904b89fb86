"""``python -m opsync``: the same as the ``opsync`` console script."""

import sys

from opsync.cli import main

sys.exit(main())
