"""The collector's tuning, in a process of its own: it changes process-wide state."""

from __future__ import annotations

import json
import subprocess
import sys

from daemon.heap import YOUNG_THRESHOLD

PROBE = """
import gc, json
from daemon.heap import tune_collector
before = gc.get_threshold()
tune_collector()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_start_up_leaves_what_it_built_out_of_later_collections_and_collects_less_often() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    found = json.loads(done.stdout)
    assert found["after"] == [YOUNG_THRESHOLD, *found["before"][1:]]
    assert found["after"][0] > found["before"][0]
    assert found["frozen"] > 1000  # the imported modules' objects at least
