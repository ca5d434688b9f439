"""Multi-round conversations: the turns a planner's follow-ups build on, and their frame.

Plain Python (no rclpy), so the limits are unit-tested without ROS. A conversation is pinned to
the frame of its first turn, so "now the one on its left" refers to what was seen when the
conversation started, even if the camera has moved on or stopped; a request with an image or
``new_frame`` moves it to another frame and keeps its turns. Limits: the prompt carries at most
``max_turns`` earlier turns (older ones drop out of it; the turn counter keeps counting), at
most ``max_conversations`` are kept (a new one evicts the least recently used), and one unused
for ``idle_timeout`` seconds is forgotten. Every conversation holds its frame message, so
memory is bounded by ``max_conversations`` frames.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Conversation:
    """One named conversation: its frame and the turns so far."""

    name: str
    frame_msg: Any
    """The image message the conversation is about (decoded once, kept as received)."""
    frame_received: float
    """time.monotonic() when the node received that frame (or got it inline)."""
    turns: list[tuple[str, str]] = field(default_factory=list)
    """(user query, assistant answer with <|seg|> tokens) of the turns kept for the prompt."""
    turn_count: int = 0
    """Turns answered so far (also those that dropped out of the prompt)."""
    last_used: float = 0.0


class ConversationStore:
    """The node's conversations by name, with the limits read at each use (live parameters)."""

    def __init__(self, limits: Callable[[], tuple[int, int, float]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``limits()`` -> (max_turns, max_conversations, idle_timeout seconds)."""
        self._limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._conversations: OrderedDict[str, Conversation] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._conversations)

    def get(self, name: str) -> Conversation | None:
        """The live conversation called ``name`` (None: never started, ended or expired)."""
        with self._lock:
            self._expire()
            conversation = self._conversations.get(name)
            if conversation is not None:
                self._conversations.move_to_end(name)
                conversation.last_used = self._clock()
            return conversation

    def start(self, name: str, frame_msg: Any, frame_received: float) -> Conversation:
        """A new conversation on ``frame_msg`` (replacing one of the same name); the least
        recently used one is forgotten when ``max_conversations`` are kept already."""
        _, max_conversations, _ = self._limits()
        with self._lock:
            self._expire()
            self._conversations.pop(name, None)
            while self._conversations and len(self._conversations) >= max_conversations:
                self._conversations.popitem(last=False)
            conversation = Conversation(name, frame_msg, frame_received,
                                        last_used=self._clock())
            self._conversations[name] = conversation
            return conversation

    def history(self, conversation: Conversation) -> list[tuple[str, str]]:
        """The earlier turns that go into the next prompt (the newest ``max_turns``)."""
        max_turns, _, _ = self._limits()
        with self._lock:
            return list(conversation.turns[-max_turns:]) if max_turns > 0 else []

    def record(self, conversation: Conversation, query: str, answer: str) -> int:
        """Add an answered turn; returns its number (1 = the first turn)."""
        max_turns, _, _ = self._limits()
        with self._lock:
            conversation.turns.append((query, answer))
            del conversation.turns[:-max_turns or len(conversation.turns)]
            conversation.turn_count += 1
            conversation.last_used = self._clock()
            return conversation.turn_count

    def end(self, name: str) -> bool:
        """Forget ``name``; False when there was no such conversation."""
        with self._lock:
            return self._conversations.pop(name, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._conversations.clear()

    def _expire(self) -> None:
        _, _, idle_timeout = self._limits()
        now = self._clock()
        for name in [n for n, c in self._conversations.items()
                     if now - c.last_used > idle_timeout]:
            del self._conversations[name]
