"""A module whose import blocks while the file named by ``SPACEBOT_TEST_IMPORT_GATE`` exists.

Tests list it in ``[supervisor] preload_first`` to hold a new zygote in its import phase for as long as
they need (the window in which a replacement zygote is running but cannot fork yet). Without the
variable, or without the file, importing it does nothing. Bounded: it gives up after 120 s.
"""

from __future__ import annotations

import os
import time

_gate = os.environ.get("SPACEBOT_TEST_IMPORT_GATE", "")
_deadline = time.monotonic() + 120.0
while _gate and os.path.exists(_gate) and time.monotonic() < _deadline:
    time.sleep(0.02)
