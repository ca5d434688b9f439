"""Topics that exist and look like the one a node waits for, ranked by name.

"Nothing arrives" is most often a name that differs from the camera's by a namespace, a remap
that was not applied or a driver's naming convention (``/camera/color/image_raw`` where the node
listens on ``/image``). Listing published topics of the same type, most similar name first,
turns that into a one-line fix. Pure string logic, shared by the node's silent-input warning
and ``stamp-ros doctor``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import SequenceMatcher

MIN_SCORE = 0.4
"""Below this a name shares too little with the expected one to call it similar."""

_SPLIT = re.compile(r"[/_\-.]+")


def _tokens(name: str) -> set[str]:
    return {t for t in _SPLIT.split(name.lower()) if t}


def name_similarity(expected: str, candidate: str) -> float:
    """0..1: 1 for the same last segment in another namespace; otherwise half the last
    segments' character similarity, a quarter the share of the expected name's words (split on
    / _ - .) that the candidate has, a quarter the words both have among all their words (so
    ``/camera/image_raw`` beats ``/camera/depth/image_raw`` for ``/image``)."""
    exp_base = expected.rstrip("/").rsplit("/", 1)[-1].lower()
    cand_base = candidate.rstrip("/").rsplit("/", 1)[-1].lower()
    if exp_base and exp_base == cand_base:
        return 1.0
    chars = SequenceMatcher(None, exp_base, cand_base).ratio()
    words, other = _tokens(expected), _tokens(candidate)
    if not words:
        return chars / 2
    return chars / 2 + len(words & other) / len(words) / 4 + len(words & other) / len(
        words | other) / 4


def hidden(topic: str) -> bool:
    """ROS's hidden topics (a segment starting with ``_``) and the infrastructure every node
    has; never a camera."""
    return (any(part.startswith("_") for part in topic.split("/"))
            or topic in ("/rosout", "/parameter_events"))


def similar_topics(expected: str, msg_type: str, published: Iterable[tuple[str, Iterable[str]]],
                   exclude: Iterable[str] = (), limit: int = 3) -> list[str]:
    """Published topics that may be the one meant by ``expected``, best first.

    ``published``: (name, types) of topics that have a publisher. Topics of ``msg_type`` come
    first (any type when none has it); those whose name scores at least :data:`MIN_SCORE`
    against ``expected`` are returned, or, when none does, the few topics of the right type
    (for a camera, any image topic is a candidate)."""
    skip = {expected, *exclude}
    entries = [(name, set(types)) for name, types in published
               if name not in skip and not hidden(name)]
    typed = [name for name, types in entries if msg_type in types]
    pool = typed or [name for name, _ in entries]
    ranked = sorted(pool, key=lambda name: (-name_similarity(expected, name), name))
    close = [name for name in ranked if name_similarity(expected, name) >= MIN_SCORE]
    if close:
        return close[:limit]
    return ranked[:limit] if typed else []
