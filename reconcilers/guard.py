"""One mass-delete guard per binding, which every deletion passes, whatever reported it.

A resync counts the deletions its listings imply before carrying any out, and holds them
all when the binding's `DeleteGuard` says they are too many. A change feed or a webhook
reports deletions one at a time, so each is admitted against the deletions carried out
within the guard's window: the first deletions of a wiped table go through, up to what
the guard allows, and the rest wait. An operator's `resync --allow-deletes` grants the
deletions that resync finds.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from reconcilers.model import DeleteGuard


class DeletionGuard:
    def __init__(self, rule: DeleteGuard, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rule = rule
        self._clock = clock
        self._carried_out: deque[float] = deque()  # when each admitted deletion was, within the window
        self._links_before = 0  # the links when the window's first deletion was admitted
        self._granted = 0
        self.held = 0
        """Deletions refused one at a time since the guard last let them through."""

    def recent(self) -> int:
        """Deletions admitted within the window."""
        horizon = self._clock() - self.rule.window
        while self._carried_out and self._carried_out[0] < horizon:
            self._carried_out.popleft()
        return len(self._carried_out)

    def blocks(self, deletes: int, links: int) -> bool:
        """Would `deletes` more, with `links` links now, be too many for the window?"""
        if self._granted >= deletes:
            return False
        recent = self.recent()
        # Against the links before the window's deletions: a link count read now may or may
        # not have lost the links of deletions still under way.
        before = max(self._links_before, links) if recent else links
        return self.rule.blocks(recent + deletes, before)

    def grant(self, deletes: int) -> None:
        """An operator allowed this many deletions (a resync with --allow-deletes found them)."""
        self._granted = deletes
        self.held = 0

    def admit(self, *, links: int) -> bool:
        """May one deletion go ahead now? Counts it when it may."""
        if self._granted > 0:
            self._granted -= 1
        elif self.blocks(1, links):
            self.held += 1
            return False
        if not self.recent():
            self._links_before = links
        self._carried_out.append(self._clock())
        return True

    def clear_held(self) -> None:
        """A resync found nothing to hold: what was held is no longer pending deletion."""
        self.held = 0
