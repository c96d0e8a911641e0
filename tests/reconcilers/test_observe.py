"""What a resync decides to look at, from two listings and the links."""

import pytest

from connectors.base import Record, RecordId
from reconcilers.canonical import fingerprint
from reconcilers.model import DeleteGuard, FieldMap, Flow, LinkDigest, LinkState, Policy, Side
from reconcilers.observe import Listing, classify

POLICY = Policy(fields=(FieldMap("title", "title"),), match=("title",))


def _records(*pairs: tuple[str, str]) -> dict[RecordId, Record]:
    return {RecordId(i): Record(RecordId(i), {"title": t}) for i, t in pairs}


def _link(row: int, app: str, ext: str, title: str, state: LinkState = LinkState.SYNCED) -> LinkDigest:
    return LinkDigest(row, RecordId(app), RecordId(ext), state, fingerprint({"title": title}), 0.0)


def test_unchanged_pairs_are_left_alone():
    work = classify(
        app=Listing(_records(("1", "a")), complete=True),
        external=Listing(_records(("x", "a")), complete=True),
        links=[_link(1, "1", "x", "a")],
        policy=POLICY,
    )
    assert work.keys == []
    assert work.unchanged == 1


def test_a_changed_side_is_looked_at_with_both_observations():
    work = classify(
        app=Listing(_records(("1", "b")), complete=True),
        external=Listing(_records(("x", "a")), complete=True),
        links=[_link(1, "1", "x", "a")],
        policy=POLICY,
    )
    assert work.keys == [(Side.APP, "1")]
    assert set(work.observations) == {(Side.APP, "1"), (Side.EXTERNAL, "x")}


def test_absence_from_an_incomplete_listing_is_not_a_deletion():
    work = classify(
        app=Listing(_records(("1", "a")), complete=True),
        external=Listing({}, complete=False, error="HTTP 500"),
        links=[_link(1, "1", "x", "a")],
        policy=POLICY,
    )
    assert work.deletions == []
    assert work.keys == []


def test_absence_from_a_complete_listing_is_a_deletion():
    work = classify(
        app=Listing(_records(("1", "a")), complete=True),
        external=Listing({}, complete=True),
        links=[_link(1, "1", "x", "a")],
        policy=POLICY,
    )
    assert work.deletions == [(Side.APP, "1")]


def test_an_edited_survivor_is_not_counted_as_a_deletion():
    work = classify(
        app=Listing(_records(("1", "edited")), complete=True),
        external=Listing({}, complete=True),
        links=[_link(1, "1", "x", "a")],
        policy=POLICY,
    )
    assert work.deletions == []  # the edit wins: the twin is recreated
    assert work.keys == [(Side.APP, "1")]


def test_a_tombstone_is_quiet_only_where_the_policy_keeps_its_survivor():
    # The app row went and its id was handed out again before tandem saw the deletion:
    # the link was released to a tombstone, and the deletion is still to be carried out.
    released = LinkDigest(1, None, RecordId("x"), LinkState.DELETED, fingerprint({"title": "a"}), 0.0)
    app, external = Listing({}, complete=True), Listing(_records(("x", "a")), complete=True)
    work = classify(app=app, external=external, links=[released], policy=POLICY)
    assert work.deletions == [(Side.EXTERNAL, "x")]
    assert work.keys == [(Side.EXTERNAL, "x")]

    keeping = Policy(fields=POLICY.fields, match=POLICY.match, deletes=Flow.NONE)
    kept = classify(app=app, external=external, links=[released], policy=keeping)
    assert (kept.keys, kept.deletions, kept.unchanged) == ([], [], 1)


def test_links_made_after_the_listing_began_are_not_judged_by_it():
    fresh = LinkDigest(1, RecordId("1"), RecordId("x"), LinkState.SYNCED, fingerprint({"title": "a"}), 100.0)
    work = classify(
        app=Listing(_records(("1", "a")), complete=True),
        external=Listing({}, complete=True),
        links=[fresh],
        policy=POLICY,
        listed_since=50.0,
    )
    assert work.deletions == []


def test_unlinked_records_pair_by_match_only_when_unique():
    work = classify(
        app=Listing(_records(("1", "a"), ("2", "dup"), ("3", "dup")), complete=True),
        external=Listing(_records(("x", "a"), ("y", "dup")), complete=True),
        links=[],
        policy=POLICY,
    )
    paired = work.observations[(Side.APP, RecordId("1"))]
    assert paired.twin is not None and paired.twin.id == "x"
    assert (Side.EXTERNAL, "x") not in work.keys  # handled through its app twin
    ambiguous = work.observations[(Side.APP, RecordId("2"))]
    assert ambiguous.twin is None and not ambiguous.twin_known


@pytest.mark.parametrize(
    ("deletes", "links", "blocked"),
    [
        pytest.param(3, 40, False, id="not-more-than-min-count"),
        pytest.param(9, 40, False, id="not-more-than-a-quarter"),
        pytest.param(11, 40, True, id="more-than-both"),
        pytest.param(20, 20, True, id="a-small-table-wiped"),
        pytest.param(2, 2, True, id="every-link-of-two"),
        pytest.param(1, 1, False, id="the-only-link"),
        pytest.param(1, 2, False, id="one-of-two"),
    ],
)
def test_the_default_guard_protects_small_tables_too(deletes, links, blocked):
    assert DeleteGuard().blocks(deletes, links) is blocked


def test_a_guard_allowing_any_share_never_blocks():
    assert not DeleteGuard(max_fraction=1.0, min_count=0).blocks(20, 20)
