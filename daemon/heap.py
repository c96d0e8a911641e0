"""The garbage collector tuned for a daemon that moves records in pages.

A page of 1,000 records allocates tens of thousands of short-lived containers. At
CPython's default threshold (700) the collector ran about 1,240 times in a 100,000-record
import, 0.38-0.49 s; with start-up's objects frozen, 0.27-0.30 s; at a threshold of 2,000
as well, about 415 times for 0.21 s (bench/RESULTS.md). A higher threshold saves more
(0.10 s at 10,000) but lets garbage cycles pile up between collections: a quiet resync of
100,000 links then peaked at 71 MB against 61.5 MB. Reference counting still frees most
objects at once; the threshold only decides how often cycles are sought.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 2_000


def tune_collector() -> None:
    """Called once start-up is done: what start-up built (modules, configuration,
    connections) lives as long as the process, so it is moved out of the collector's
    way, and later collections walk only what the sync itself keeps."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
