"""The binding's one mass-delete guard: deletions reported one at a time add up."""

from reconcilers.guard import DeletionGuard
from reconcilers.model import DeleteGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_deletions_one_at_a_time_are_held_once_they_add_up_to_too_many():
    clock = Clock()
    guard = DeletionGuard(DeleteGuard(), clock=clock)
    links, admitted = 25, 0
    for _ in range(25):  # the app runs DELETE FROM tasks: the feed reports 25 deletions
        if guard.admit(links=links):
            admitted += 1
            links -= 1
    assert admitted == 6  # more than 3 and more than a quarter of 25 is held
    assert guard.held == 19


def test_deletions_spread_beyond_the_window_are_not_added_up():
    clock = Clock()
    guard = DeletionGuard(DeleteGuard(window=60.0), clock=clock)
    links = 25
    for _ in range(12):
        assert guard.admit(links=links)
        links -= 1
        clock.now += 30.0  # two a minute: never more than three within the window
    assert guard.held == 0


def test_an_operators_grant_lets_the_deletions_it_allowed_through_and_no_more():
    guard = DeletionGuard(DeleteGuard(), clock=Clock())
    assert guard.blocks(10, 10)
    guard.grant(10)
    assert not guard.blocks(10, 10)
    assert all(guard.admit(links=10 - n) for n in range(10))
    assert not guard.admit(links=5)  # the grant is spent: the next ones count again
