"""Who acts: the subject of a verified token and whether it may act on any account."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    sub: str
    scopes: frozenset[str]

    @property
    def is_operator(self) -> bool:
        return "operator" in self.scopes

    def owns(self, owner: str) -> bool:
        """The contract's owner rule: without `operator`, only accounts whose owner is `sub`."""
        return self.is_operator or owner == self.sub


SYSTEM = Actor(sub="holdfast-system", scopes=frozenset({"operator"}))
