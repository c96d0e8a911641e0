"""The garbage collector tuned for a daemon that moves records in pages.

A page of 1,000 records allocates tens of thousands of short-lived containers. At
CPython's default threshold (700) the collector ran over a thousand times in a 100,000
record import, about 0.4 s against the event loop's 3 s; at 10,000 it ran a few dozen
times for 0.06 s, and peak memory grew by under 1 MB. Reference counting still
frees almost everything at once: the threshold only decides how often cycles are sought.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def tune_collector() -> None:
    """Called once start-up is done: what start-up built (modules, configuration,
    connections) lives as long as the process, so it is moved out of the collector's
    way, and later collections walk only what the sync itself keeps."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
