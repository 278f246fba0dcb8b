"""``python -m observatory_assets.cli``: the same as the ``observatory`` command."""

import sys

from observatory_assets.cli import main

sys.exit(main())
