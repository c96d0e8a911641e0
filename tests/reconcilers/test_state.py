"""The state store on a real SQLite file."""

import sqlite3

import pytest

from connectors.base import RecordId
from reconcilers.canonical import fingerprint
from reconcilers.migrations import StateError
from reconcilers.model import LinkState, Side
from reconcilers.state import Agreement, Intent, LinkTaken, NewLink, open_state

pytestmark = pytest.mark.anyio


async def test_one_link_per_record(tmp_path):
    async with open_state(tmp_path / "state.db") as store:
        await store.insert_link(
            "b", app_id=RecordId("1"), external_id=RecordId("x"), state=LinkState.SYNCED, now=1.0,
            base={"t": "a"},
        )  # fmt: skip
        with pytest.raises(LinkTaken):
            await store.insert_link(
                "b", app_id=RecordId("2"), external_id=RecordId("x"), state=LinkState.SYNCED, now=1.0
            )
        link = await store.link_for("b", Side.EXTERNAL, RecordId("x"))
        assert link is not None and link.app_id == "1" and link.base == {"t": "a"}


async def test_state_survives_reopen_and_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "state.db"
    async with open_state(path) as store:
        await store.set_cursor("b", "app-changes", "42")
    async with open_state(path) as store:
        assert await store.cursor("b", "app-changes") == "42"
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(StateError, match="newer than this tandem supports"):
        async with open_state(path):
            pass


async def test_corrupt_state_is_a_clear_error(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="state database"):
        async with open_state(path):
            pass


async def test_a_version_1_state_is_migrated_and_keeps_its_links(tmp_path):
    from reconcilers import migrations

    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:  # the state as the first release wrote it
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for statement in migrations._MIGRATIONS[0]:
            db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (1)")
        db.execute(
            "INSERT INTO links (binding, app_id, external_id, state, base, updated_at)"
            " VALUES ('b', '1', 'x', 'synced', '{\"t\":\"a\"}', 1.0)"
        )
    async with open_state(path) as store:
        link = await store.link_for("b", Side.APP, RecordId("1"))
        assert link is not None
        assert link.base == {"t": "a"}
        assert link.intent_id is None  # the new column is there
        assert await store.outbox_depth("b") == 0  # the new table is there
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == migrations.SCHEMA_VERSION == 3


async def test_release_keeps_the_other_side_as_a_tombstone_or_drops_an_empty_link(tmp_path):
    async with open_state(tmp_path / "state.db") as store:
        pair = await store.insert_link(
            "b", app_id=RecordId("9"), external_id=RecordId("10"), state=LinkState.SYNCED, now=1.0
        )
        parked = await store.insert_link("b", app_id=RecordId("8"), external_id=None, state=LinkState.ERROR, now=1.0)
        await store.release(pair, side=Side.APP, now=2.0)
        await store.release(parked, side=Side.APP, now=2.0)
        kept = await store.link_by_row(pair)
        assert kept is not None
        assert (kept.app_id, kept.external_id, kept.state) == (None, "10", LinkState.DELETED)
        assert await store.link_by_row(parked) is None
        assert await store.link_for("b", Side.APP, RecordId("9")) is None


async def test_pending_intents_leave_out_the_rows_a_batch_names_as_its_own(tmp_path):
    async with open_state(tmp_path / "state.db") as store:
        intents: list[Intent] = [(RecordId(f"a{i}"), fingerprint({"t": str(i)}), None) for i in range(3)]
        rows = await store.insert_intents_many("b", intents, source=Side.APP, now=1.0)
        ours = {row for row in rows[:2] if row is not None}

        others = await store.pending("b", side=Side.EXTERNAL, excluding=ours)
        assert [link.app_id for link in others] == ["a2"]
        assert len(await store.pending("b", side=Side.EXTERNAL)) == 3
        assert await store.pending("b", side=Side.APP, excluding=ours) == []


async def test_every_way_of_storing_an_intent_is_counted_and_other_link_writes_are_not(tmp_path):
    """A batch reads the creates in flight again only when this count moves."""
    async with open_state(tmp_path / "state.db") as store:
        counted = store.intents_stored
        row = await store.insert_link("b", app_id=RecordId("a1"), external_id=None, state=LinkState.SYNCED, now=1.0)
        await store.insert_links_many("b", [NewLink(RecordId("a2"), RecordId("e2"), LinkState.SYNCED)], now=1.0)
        await store.settle(
            row, app_id=RecordId("a1"), external_id=RecordId("e1"), state=LinkState.SYNCED, base={}, now=1.0
        )
        assert store.intents_stored == counted

        await store.mark_pending(row, side=Side.APP, values={"t": "1"}, now=2.0)
        await store.insert_link(
            "b", app_id=RecordId("a3"), external_id=None, state=LinkState.PENDING, now=2.0,
            intent_side=Side.EXTERNAL, intent_values={"t": "3"},
        )  # fmt: skip
        pending = NewLink(RecordId("a4"), None, LinkState.PENDING, intent_side=Side.EXTERNAL, intent_values={})
        await store.insert_links_many("b", [pending], now=2.0)
        await store.insert_intents_many("b", [(RecordId("a5"), fingerprint({}), None)], source=Side.APP, now=2.0)
        with pytest.raises(LinkTaken):  # refused, and counted all the same: a reader only reads again
            await store.insert_link(
                "b", app_id=RecordId("a3"), external_id=None, state=LinkState.PENDING, now=2.0,
                intent_side=Side.EXTERNAL, intent_values={"t": "3"},
            )  # fmt: skip
        assert store.intents_stored == counted + 5
        assert len(await store.pending("b")) == 4


async def test_a_batch_answers_for_each_link_whether_it_went_in(tmp_path):
    """Links whose id is linked already are left as they were: the rest get their rows."""
    async with open_state(tmp_path / "state.db") as store:
        await store.insert_link("b", app_id=RecordId("a1"), external_id=RecordId("x"), state=LinkState.SYNCED, now=1.0)
        batch = [NewLink(RecordId(f"a{i}"), RecordId(f"e{i}"), LinkState.SYNCED, base={"t": str(i)}) for i in range(4)]
        batch.append(NewLink(RecordId("a3"), RecordId("e9"), LinkState.SYNCED, base={}))  # a3 twice in one batch
        rows = await store.insert_links_many("b", batch, now=2.0)

        assert rows[1] is None and rows[4] is None
        for link, row in zip(batch, rows, strict=True):
            if row is not None:
                stored = await store.link_by_row(row)
                assert stored is not None and (stored.app_id, stored.external_id) == (link.app_id, link.external_id)
        assert len({row for row in rows if row is not None}) == 3


async def test_a_batch_settles_only_intents_it_still_can(tmp_path):
    """Settling sets the created id alone: the source's id stays as the intent holds it,
    and an intent whose created id is taken, or whose source was released, stays pending."""
    async with open_state(tmp_path / "state.db") as store:
        intents: list[Intent] = [(RecordId(f"e{i}"), fingerprint({"t": str(i)}), None) for i in range(3)]
        rows = [row for row in await store.insert_intents_many("b", intents, source=Side.EXTERNAL, now=1.0) if row]
        assert len(rows) == 3
        pending = await store.link_by_row(rows[0])
        assert pending is not None and pending.intent_side is Side.APP and pending.intent_values == {"t": "0"}
        await store.insert_link(
            "b", app_id=RecordId("taken"), external_id=RecordId("other"), state=LinkState.SYNCED, now=1.0
        )
        await store.release(rows[2], side=Side.EXTERNAL, now=2.0)  # e2 now names another record
        agreements: list[Agreement] = [(rows[0], RecordId("1")), (rows[1], RecordId("taken")), (rows[2], RecordId("3"))]
        unsettled = await store.settle_many(agreements, created_on=Side.APP, now=3.0)

        assert sorted(unsettled) == sorted(rows[1:])
        settled = await store.link_for("b", Side.APP, RecordId("1"))
        assert settled is not None and settled.external_id == "e0" and settled.state is LinkState.SYNCED
        assert settled.base == {"t": "0"} and settled.intent_values is None
        for row in rows[1:]:
            left = await store.link_by_row(row)
            assert left is not None and left.state is LinkState.PENDING and left.app_id is None


async def test_an_id_holding_a_nul_character_is_left_out_of_a_batch_not_cut_short(tmp_path):
    """A batch travels as JSON, which SQLite reads only up to a NUL: such an id is left
    to the one-link way rather than stored cut short."""
    async with open_state(tmp_path / "state.db") as store:
        links = [
            NewLink(RecordId("a\x00b"), RecordId("e1"), LinkState.SYNCED, base={}),
            NewLink(RecordId("a2"), RecordId("e2"), LinkState.SYNCED, base={"t": "x\x00y"}),
            NewLink(None, RecordId("e3"), LinkState.PENDING, intent_side=Side.APP, intent_values={"t": "3"}),
        ]
        nul, fine, intent = await store.insert_links_many("b", links, now=1.0)

        assert nul is None and fine is not None and intent is not None
        assert await store.link_for("b", Side.APP, RecordId("a")) is None  # nothing cut short
        kept = await store.link_for("b", Side.APP, RecordId("a2"))
        assert kept is not None and kept.base == {"t": "x\x00y"}  # a NUL inside a value's JSON is escaped
        unsettled = await store.settle_many([(intent, RecordId("c\x00d"))], created_on=Side.APP, now=2.0)
        assert unsettled == [intent]  # still pending, for the reconcile
        assert await store.link_for("b", Side.APP, RecordId("c")) is None


async def test_a_batch_costs_the_same_however_many_links_there_are(tmp_path):
    """A batch finds its rows by rowid: a plan that walked an index of the binding would
    have every batch walk every link, and an import cost the square of its size."""
    async with open_state(tmp_path / "state.db") as store:
        existing = [NewLink(RecordId(f"a{i}"), RecordId(f"e{i}"), LinkState.SYNCED, base={}) for i in range(20_000)]
        await store.insert_links_many("b", existing, now=1.0)
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0  # go on

        await store._db.set_progress_handler(count, 100)  # every 100 virtual machine steps
        intents = [
            NewLink(None, RecordId(f"x{i}"), LinkState.PENDING, intent_side=Side.APP, intent_values={})
            for i in range(10)
        ]
        rows = await store.insert_links_many("b", intents, now=2.0)
        agreements = [(row, RecordId(f"new{i}")) for i, row in enumerate(rows) if row is not None]
        unsettled = await store.settle_many(agreements, created_on=Side.APP, now=3.0)

        assert len(agreements) == 10 and unsettled == []
        assert steps * 100 < 20_000  # fewer steps than there are links: none of them was walked
