"""``python -m render_worker``: the same command as the ``rvm-worker`` console script."""

import sys

from .cli import main

sys.exit(main())
