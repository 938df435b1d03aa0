"""``python -m kangaroo``: the ``kangaroo`` command line."""

import sys

from .cli import main

sys.exit(main())
