"""The resync's diff alone: N links in a state database file, both sides listing N
records a page of 1,000 at a time (made on the fly, so the bench holds no collection),
1% of the external records changed.

Measured, each size in its own process so each peak RSS is its own:

* `listing_seconds`: taking both listings in as a resync does (digest of the mapped
  values, the page stored in the state database's temporary tables);
* `diff_seconds`: the diff proper (the join of links and listings, the quiet links
  counted, the rest classified in Python);
* `peak_rss_mb` of the whole run, and `interpreter_rss_mb` before it began;
* `in_memory_*`, with `--in-memory`: the same decision by `classify` over both listings
  and every link held as Python objects, the way a resync worked before.

    python bench/diff.py --sizes 10000,100000,1000000 [--in-memory]
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.base import Page, Record, RecordId  # noqa: E402
from reconcilers.canonical import fingerprint  # noqa: E402
from reconcilers.model import FieldMap, LinkDigest, LinkState, Policy, Side  # noqa: E402
from reconcilers.observe import Listing, classify  # noqa: E402
from reconcilers.resync import diff, list_into  # noqa: E402
from reconcilers.state import open_state  # noqa: E402

POLICY = Policy(
    fields=(FieldMap(name="title", external="title"), FieldMap(name="note", external="note")),
    match=("title",),
)
PAGE = 1000


def _app(i: int) -> Record:
    return Record(RecordId(str(i)), {"id": i, "title": f"t{i}", "note": None})


def _external(i: int) -> Record:
    return Record(RecordId(f"e{i}"), {"id": f"e{i}", "title": f"t{i}", "note": "x" if i % 100 == 0 else None})


class Generated:
    """A collection whose pages are made when asked for."""

    def __init__(self, n: int, make: Callable[[int], Record], label: str) -> None:
        self._n, self._make, self.label = n, make, label

    async def list_page(self, cursor: str | None) -> Page:
        start = int(cursor or 0)
        end = min(start + PAGE, self._n)
        records = [self._make(i) for i in range(start, end)]
        return Page(records, str(end) if end < self._n else None)


def _seed_links(path: Path, n: int) -> None:
    async def schema() -> None:
        async with open_state(path):
            pass

    anyio.run(schema)
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO links (binding, app_id, external_id, state, base, synced_at, updated_at)"
            " VALUES ('b', ?, ?, 'synced', ?, 0, 0)",
            ((str(i), f"e{i}", fingerprint({"title": f"t{i}", "note": None})) for i in range(n)),
        )


def measure(n: int) -> dict[str, float]:
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.db"
        _seed_links(path, n)

        async def run() -> tuple[float, float]:
            async with open_state(path) as store, store.listed("b") as listed:
                started = time.perf_counter()
                app = await list_into(Generated(n, _app, "app"), Side.APP, listed, POLICY)  # type: ignore[arg-type]
                ext = await list_into(Generated(n, _external, "ext"), Side.EXTERNAL, listed, POLICY)  # type: ignore[arg-type]
                listed_at = time.perf_counter()
                work = await diff(listed, app, ext, policy=POLICY, listed_since=time.time())
                done = time.perf_counter()
            assert len(work.keys) == n // 100 and work.unchanged == n - n // 100, (len(work.keys), work.unchanged)
            return listed_at - started, done - listed_at

        listing_seconds, diff_seconds = anyio.run(run)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "links": n,
        "listing_seconds": round(listing_seconds, 3),
        "diff_seconds": round(diff_seconds, 3),
        "peak_rss_mb": round(peak, 1),
        "interpreter_rss_mb": round(baseline, 1),
    }


def measure_in_memory(n: int) -> dict[str, float]:
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    app = {RecordId(str(i)): _app(i) for i in range(n)}
    external = {RecordId(f"e{i}"): _external(i) for i in range(n)}
    links = [
        LinkDigest(
            i, RecordId(str(i)), RecordId(f"e{i}"), LinkState.SYNCED, fingerprint({"title": f"t{i}", "note": None}), 0.0
        )
        for i in range(n)
    ]
    started = time.perf_counter()
    work = classify(app=Listing(app, True), external=Listing(external, True), links=links, policy=POLICY)
    seconds = time.perf_counter() - started
    assert len(work.keys) == n // 100 and work.unchanged == n - n // 100
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "links": n,
        "in_memory_diff_seconds": round(seconds, 3),
        "in_memory_peak_rss_mb": round(peak, 1),
        "interpreter_rss_mb": round(baseline, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--in-memory", action="store_true", help="also measure the in-memory classify")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--one-in-memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    if args.one_in_memory:
        print(json.dumps(measure_in_memory(args.one_in_memory)))
        return

    def child(*flags: str) -> dict[str, float]:
        done = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True, check=True)
        return dict(json.loads(done.stdout))

    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        result = child("--one", str(size))
        if args.in_memory:
            result |= child("--one-in-memory", str(size))
        results.append(result)
        print(json.dumps(result), flush=True)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "diff.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
