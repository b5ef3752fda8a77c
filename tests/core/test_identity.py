"""SeqAllocator: strictly increasing per owner across restarts and crashes, never reused."""

from __future__ import annotations

import json

import pytest

from agent.core.identity import SeqAllocator


def test_ids_name_their_owner_and_count_from_one(tmp_path):
    ids = SeqAllocator("bybit-main", tmp_path / "seq.json", block_size=10)
    assert [ids.next() for _ in range(3)] == [(1, "bybit-main:1"), (2, "bybit-main:2"), (3, "bybit-main:3")]
    assert ids.last == 3


def test_a_restart_continues_above_everything_handed_out(tmp_path):
    path = tmp_path / "seq.json"
    first = SeqAllocator("x", path, block_size=10)
    handed = [first.next()[0] for _ in range(25)]
    second = SeqAllocator("x", path, block_size=10)  # a crash: nothing was saved at stop
    after = second.next()[0]
    assert after > max(handed)
    assert after - max(handed) <= 10, "a crash skips at most one block"


def test_blocks_are_reserved_before_numbers_are_used(tmp_path):
    path = tmp_path / "seq.json"
    ids = SeqAllocator("x", path, block_size=100)
    ids.next()
    assert json.loads(path.read_text())["reserved"] >= 1
    for _ in range(150):
        seq, _ = ids.next()
        assert json.loads(path.read_text())["reserved"] >= seq


def test_many_restarts_never_repeat_a_number(tmp_path):
    path = tmp_path / "seq.json"
    seen: list[int] = []
    for run in range(20):
        ids = SeqAllocator("x", path, block_size=7)
        seen.extend(ids.next()[0] for _ in range(run % 9))
    assert seen == sorted(set(seen))


def test_an_unreadable_mark_is_an_error_not_a_restart_at_one(tmp_path):
    path = tmp_path / "seq.json"
    path.write_text("{not json")
    with pytest.raises(RuntimeError, match="seq.json"):
        SeqAllocator("x", path)
    path.write_text('{"reserved": -4}')
    with pytest.raises(RuntimeError, match="non-negative"):
        SeqAllocator("x", path)


def test_without_a_path_numbering_is_in_memory(tmp_path):
    ids = SeqAllocator("x")
    assert ids.next() == (1, "x:1")
    assert list(tmp_path.iterdir()) == []
