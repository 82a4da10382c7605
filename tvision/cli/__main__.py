"""``python -m tvision.cli``: the same command as the ``tvision`` console script."""

from __future__ import annotations

import sys

from tvision.cli import main

sys.exit(main())
