"""Which sources each mode runs and which one is authoritative (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModePlan:
    """A mode as the pipeline runs it: the sources it needs and the one that feeds the book."""

    mode: str
    sources: frozenset[str]
    authority: str
    primary: str | None = None  # shadow only: which source the sinks follow


def plan_for(mode: str, shadow_primary: str = "rest") -> ModePlan:
    """The plan of ``mode``; in shadow mode both sources run and ``shadow_primary`` is authoritative."""
    if mode == "rest":
        return ModePlan("rest", frozenset({"rest"}), "rest")
    if mode == "hybrid":
        return ModePlan("hybrid", frozenset({"ws"}), "ws")
    if mode == "shadow":
        if shadow_primary not in ("rest", "ws"):
            raise ValueError(f"shadow primary must be rest or ws, was {shadow_primary!r}")
        return ModePlan("shadow", frozenset({"rest", "ws"}), shadow_primary, shadow_primary)
    raise ValueError(f"unknown mode {mode!r}")
