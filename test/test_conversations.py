"""The conversation store's rules, without ROS: pinning, limits, eviction, expiry, ending."""

from __future__ import annotations

from stamp_ros.pipeline.conversations import ConversationStore


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def store(max_turns: int = 2, max_conversations: int = 2, idle: float = 10.0,
          clock: Clock | None = None) -> ConversationStore:
    return ConversationStore(lambda: (max_turns, max_conversations, idle), clock or Clock())


def test_turns_are_counted_and_the_prompt_keeps_only_the_newest():
    s = store(max_turns=2)
    c = s.start("a", "frame", 1.0)
    assert s.history(c) == []
    assert [s.record(c, f"q{i}", f"a{i}") for i in range(1, 5)] == [1, 2, 3, 4]
    assert s.history(c) == [("q3", "a3"), ("q4", "a4")]
    assert s.get("a") is c and c.turn_count == 4 and c.frame_msg == "frame"


def test_zero_max_turns_keeps_no_history_but_counts():
    s = store(max_turns=0)
    c = s.start("a", "frame", 1.0)
    assert s.record(c, "q", "a") == 1 and s.record(c, "q", "a") == 2
    assert s.history(c) == []


def test_the_least_recently_used_conversation_is_evicted():
    s = store(max_conversations=2)
    s.start("a", "fa", 0.0)
    s.start("b", "fb", 0.0)
    assert s.get("a") is not None  # a is now more recent than b
    s.start("c", "fc", 0.0)
    assert s.get("b") is None and s.get("a") is not None and s.get("c") is not None
    assert len(s) == 2


def test_idle_conversations_expire_and_use_keeps_them_alive():
    clock = Clock()
    s = store(idle=10.0, clock=clock)
    s.start("a", "fa", 0.0)
    s.start("b", "fb", 0.0)
    clock.t += 8
    assert s.get("a") is not None
    clock.t += 8  # b unused for 16 s, a for 8 s
    assert s.get("b") is None and s.get("a") is not None


def test_end_forgets_and_a_restart_begins_at_turn_one():
    s = store()
    c = s.start("a", "fa", 0.0)
    s.record(c, "q", "a")
    assert s.end("a") and not s.end("a")
    c2 = s.start("a", "fb", 0.0)
    assert s.record(c2, "q", "a") == 1 and s.history(c2) == [("q", "a")]
