"""The resync's diff alone: N linked records on each side, both listings and the link table
in place, 1% of the external records changed. Measures `classify` (the pure decision of
which keys need a reconcile) and the peak RSS of holding its inputs, each size in its own
process so each peak is its own.

    python bench/diff.py --sizes 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.base import Record, RecordId  # noqa: E402
from reconcilers.canonical import fingerprint  # noqa: E402
from reconcilers.model import (  # noqa: E402
    FieldMap,
    LinkState,
    Policy,
)
from reconcilers.observe import Listing, classify  # noqa: E402
from reconcilers.state import LinkDigest  # noqa: E402

POLICY = Policy(
    fields=(FieldMap(name="title", external="title"), FieldMap(name="note", external="note")),
    match=("title",),
)


def base(i: int) -> str:
    return fingerprint({"title": f"t{i}", "note": None})


def measure(n: int) -> dict[str, float]:
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    app = {RecordId(str(i)): Record(RecordId(str(i)), {"id": i, "title": f"t{i}", "note": None}) for i in range(n)}
    external = {
        RecordId(f"e{i}"): Record(
            RecordId(f"e{i}"), {"id": f"e{i}", "title": f"t{i}", "note": "x" if i % 100 == 0 else None}
        )
        for i in range(n)
    }
    links = [
        LinkDigest(
            i, RecordId(str(i)), RecordId(f"e{i}"), LinkState.SYNCED, fingerprint({"title": f"t{i}", "note": None}), 0.0
        )
        for i in range(n)
    ]
    started = time.perf_counter()
    work = classify(app=Listing(app, True), external=Listing(external, True), links=links, policy=POLICY)
    seconds = time.perf_counter() - started
    assert len(work.keys) == n // 100 and work.unchanged == n - n // 100, (len(work.keys), work.unchanged)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"links": n, "diff_seconds": seconds, "peak_rss_mb": peak, "interpreter_rss_mb": baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(size)], capture_output=True, text=True, check=True
        )
        results.append(json.loads(done.stdout))
        print(json.dumps(results[-1]))
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "diff.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
