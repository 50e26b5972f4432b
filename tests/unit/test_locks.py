"""The one lock holder (restore, preseed, migrate): a heartbeat keeps a held lock
alive however long the work between two calls takes; a lock found taken over
stops the holder; waiting and giving up are bounded. On the in-memory engine
(the contract suite runs the same lock rules on the real servers)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from rpger_ops.locks import LockBusy, LockHolder, LockLost
from tests.memory_engine import MemoryEngine


def engines() -> tuple[MemoryEngine, MemoryEngine]:
    name = f"lock-{uuid.uuid4().hex[:8]}"
    return MemoryEngine(name), MemoryEngine(name)


def test_the_heartbeat_keeps_the_lock_past_its_ttl_without_any_call_from_the_work() -> None:
    mine, other = engines()
    with LockHolder({"redis": mine}, "preseed", "restore", ttl_s=0.6) as holder:
        time.sleep(2.5)  # four TTLs of "a long index build": no progress callback at all
        assert not other.acquire_lock("preseed", "someone-else", 60)
        holder.check()
    assert other.acquire_lock("preseed", "someone-else", 60)  # released on exit


def test_a_lock_taken_over_stops_the_holder() -> None:
    mine, _ = engines()
    with LockHolder({"redis": mine}, "preseed", "restore", ttl_s=0.6) as holder:
        mine.server.locks["preseed"] = ("intruder", time.time() + 60)  # its lock expired and was retaken
        deadline = time.monotonic() + 5
        while not holder.lost.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(LockLost):
            holder.check()
    assert mine.server.locks["preseed"][0] == "intruder"  # the holder never releases someone else's lock


def test_waiting_for_a_busy_lock_is_bounded_and_then_it_is_taken() -> None:
    mine, other = engines()
    assert other.acquire_lock("preseed", "first", 60)
    started = time.monotonic()
    busy = LockHolder({"mongo": mine}, "preseed", "restore", wait_s=1.0)
    with pytest.raises(LockBusy, match="gave up after 1s"), busy:
        pass
    assert 0.9 < time.monotonic() - started < 5
    waited: list[str] = []
    threading.Timer(0.5, lambda: other.release_lock("preseed", "first")).start()
    with LockHolder({"mongo": mine}, "preseed", "restore", wait_s=10, on_wait=lambda m, d, t: waited.append(m)):
        assert waited and "waiting for the preseed lock" in waited[0]


def test_several_databases_are_locked_in_one_order_and_all_released_on_failure() -> None:
    a, a2 = engines()
    b, b2 = engines()
    assert b2.acquire_lock("preseed", "busy", 60)
    with pytest.raises(LockBusy), LockHolder({"redis": b, "chroma": a}, "preseed", "preseed", wait_s=0.2):
        pass
    # chroma sorts first and was taken, then redis was busy: chroma's lock is given back.
    assert a2.acquire_lock("preseed", "next", 60)
