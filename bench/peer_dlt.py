"""The peer: dlt's `rest_api` source importing the same records into duckdb.

Runs in its own virtual environment (`make bench` builds `.tools/dlt`), so tandem's
dependencies and dlt's never meet. Two configurations: dlt's defaults, and the fastest
found (parquet files, no nested tables).

    .tools/dlt/bin/python bench/peer_dlt.py --url URL --workdir DIR [--best]

Prints one JSON line: records loaded, seconds, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import dlt
from dlt.sources.rest_api import rest_api_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--best", action="store_true")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    config: Any = {
        "client": {
            "base_url": args.url,
            "paginator": {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"},
        },
        "resource_defaults": {"endpoint": {"params": {"limit": 1000}, "data_selector": "data"}},
        "resources": [{"name": "records", "endpoint": {"path": "records"}}],
    }
    source = rest_api_source(config)
    if args.best:
        source.max_table_nesting = 0
    pipeline = dlt.pipeline(
        pipeline_name="bench",
        pipelines_dir=str(workdir / "pipelines"),
        destination=dlt.destinations.duckdb(str(workdir / "peer.duckdb")),
        dataset_name="bench",
    )
    started = time.perf_counter()
    pipeline.run(source, loader_file_format="parquet" if args.best else None)
    seconds = time.perf_counter() - started
    with pipeline.sql_client() as client:
        loaded = client.execute_sql("SELECT COUNT(*) FROM records")[0][0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"records": loaded, "seconds": seconds, "peak_rss_mb": peak}))


if __name__ == "__main__":
    main()
