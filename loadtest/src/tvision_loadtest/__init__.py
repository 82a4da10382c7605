"""The tvision load test: a Locust user over the SDK, a release gate, a baseline and a report.

Needs only ``tvision-client``, ``locust`` and ``pillow``. Run it with ``tvision-loadtest``
(Locust's own command line, with this package's locustfile), or ``locust -f LOCUSTFILE``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
LOCUSTFILE = PACKAGE_DIR / "locustfile.py"
SHAPES = PACKAGE_DIR / "shapes.py"
BUNDLED_IMAGES = PACKAGE_DIR / "images"
