"""Compare an agent's position events with the simulator's own record of what happened."""

from __future__ import annotations

from decimal import Decimal

from agent.core.events import PositionEvent

Fact = tuple[str, int, str, str, Decimal]  # symbol, position_idx, change, side, size


def agent_facts(events: list[PositionEvent]) -> list[Fact]:
    """Lifecycle facts from events: opened, size changes, closed (price-driven updates dropped)."""
    facts: list[Fact] = []
    last: dict[tuple[str, int], Decimal] = {}
    for e in events:
        key = (e.symbol, e.position_idx)
        size = Decimal(e.size)
        if e.change == "updated" and last.get(key) == size:
            continue
        facts.append((e.symbol, e.position_idx, e.change, e.side, size))
        if e.change == "closed":
            last.pop(key, None)
        else:
            last[key] = size
    return facts


def simulator_facts(sim, venue: str) -> list[Fact]:
    return [(c.symbol, c.position_idx, c.change, c.side, Decimal(c.size)) for c in sim.record.for_venue(venue)]


def per_key(facts: list[Fact]) -> dict[tuple[str, int], list[tuple[str, str, Decimal]]]:
    out: dict[tuple[str, int], list[tuple[str, str, Decimal]]] = {}
    for symbol, idx, change, side, size in facts:
        out.setdefault((symbol, idx), []).append((change, side, size))
    return out


def assert_same_lifecycle(agent_events: list[PositionEvent], sim, venue: str) -> None:
    """No lifecycle event lost, none duplicated: per position, the same sequence as the simulator's record.

    A size change the agent never saw as a separate step (two resizes between observations)
    is allowed to be merged only if the final state agrees; opens and closes must match exactly.
    """
    mine, theirs = per_key(agent_facts(agent_events)), per_key(simulator_facts(sim, venue))
    assert set(mine) == set(theirs), f"positions differ: agent {sorted(mine)} vs simulator {sorted(theirs)}"
    for key in theirs:
        a, s = mine[key], theirs[key]
        assert [x for x in a if x[0] != "updated"] == [x for x in s if x[0] != "updated"], (key, a, s)
        assert a[-1] == s[-1], (key, a, s)
        assert len(a) <= len(s), f"duplicated events for {key}: {a} vs {s}"
