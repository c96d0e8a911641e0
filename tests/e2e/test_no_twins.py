"""No twins from a listing's silence: an API listing that answers `[]`, or cuts a page
short, while its records exist, never makes tandem create them a second time."""

from collections import Counter

import pytest

from tests.e2e.test_sync import ext_records
from tests.support.daemon import AppDb, Daemon, eventually
from tests.support.servers import inject, seed

pytestmark = pytest.mark.anyio


async def _both_sides(daemon: Daemon, app_db: AppDb, external: str, titles: list[str]) -> None:
    for title in titles:
        app_db.execute("INSERT INTO tasks (title, done) VALUES (?, 0)", (title,))
    await seed(external, "tasks", [{"title": title, "completed": False} for title in titles])


async def _all_linked(daemon: Daemon, count: int) -> None:
    async def linked() -> bool:
        return f'"synced": {count}' in daemon.command("status", "--json").stdout

    await eventually(linked, timeout=30, what=f"{count} links")


def _twins(titles: list[str]) -> dict[str, int]:
    return {title: n for title, n in Counter(titles).items() if n > 1}


async def test_an_empty_listing_with_no_links_yet_pairs_rather_than_creates(daemon, external, app_db):
    titles = [f"task {i}" for i in range(30)]
    await _both_sides(daemon, app_db, external, titles)
    # A first start (or a lost state database): the external listing answers 200 [] once.
    await inject(external, status=200, body="[]", count=1, methods=["GET"], path_prefix="/tasks")
    await daemon.start()
    await _all_linked(daemon, 30)
    assert _twins([r["title"] for r in await ext_records(external)]) == {}
    assert len(await ext_records(external)) == 30
    assert _twins(app_db.titles()) == {} and len(app_db.rows()) == 30
    assert daemon.stop() == 0


async def test_a_page_cut_short_in_the_middle_of_a_listing_makes_no_twins(daemon, external, app_db):
    titles = [f"task {i}" for i in range(110)]  # three pages of 50
    await _both_sides(daemon, app_db, external, titles)
    await inject(external, status=200, body="[]", count=1, methods=["GET"], path_prefix="/tasks", query="_page=2")
    await daemon.start()
    await _all_linked(daemon, 110)
    assert len(await ext_records(external)) == 110
    assert _twins([r["title"] for r in await ext_records(external)]) == {}
    assert len(app_db.rows()) == 110
    assert daemon.stop() == 0
