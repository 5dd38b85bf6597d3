"""``python -m rvm_vfx``: the same command as the ``rvm-vfx`` console script."""

import sys

from .cli import main

sys.exit(main())
