"""A scratch schema in the machine's PostgreSQL (database `test`) for one test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from connectors.postgres_changelog import qualified, quote

DSN = os.environ.get("TANDEM_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@asynccontextmanager
async def scratch_schema(name: str, table: str, columns: str) -> AsyncIterator[str]:
    """Schema `name` holding `table (columns)`, dropped with everything in it afterwards."""
    admin = await asyncpg.connect(DSN)
    try:
        await admin.execute(f"CREATE SCHEMA {quote(name)}")
        await admin.execute(f"CREATE TABLE {qualified(name, table)} ({columns})")
        yield name
    finally:
        await admin.execute(f"DROP SCHEMA {quote(name)} CASCADE")
        await admin.close()
