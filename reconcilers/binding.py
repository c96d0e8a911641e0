"""A binding at run time: its name, its policy and the two collections it keeps in sync."""

from __future__ import annotations

from dataclasses import dataclass

from connectors.base import Collection
from reconcilers.model import Policy, Side


@dataclass(frozen=True, slots=True)
class Binding:
    """A binding at run time: its policy and the two collections it keeps in sync."""

    name: str
    policy: Policy
    app: Collection
    external: Collection

    def side(self, side: Side) -> Collection:
        return self.app if side is Side.APP else self.external
