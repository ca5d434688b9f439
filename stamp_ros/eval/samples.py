"""What an evaluation runs on: samples (an image, a text, a ground truth) grouped into splits.

Every dataset loader (:mod:`~stamp_ros.eval.refer`, :mod:`~stamp_ros.eval.labels`,
:mod:`~stamp_ros.eval.bag_data`) turns its files into :class:`Sample` objects that load their
image and ground truth only when the runner gets to them, so listing a split costs only its
metadata and memory does not grow with the split. A sample whose metadata is already unusable
(an annotation missing from ``instances.json``, a label line that is not JSON) still becomes a
sample, carrying its ``problem``: the runner records it as a data error instead of dropping it
silently, so the count of what was not scored is always visible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stamp_ros.engine.errors import InputError

__all__ = ["DataError", "Sample", "Split", "read_rgb"]


class DataError(InputError):
    """One sample's data is unusable (missing image, undecodable annotation): it is excluded."""


@dataclass(frozen=True)
class Sample:
    """One (image, text, ground truth) triple of a split."""

    dataset: str
    split: str
    id: str
    """Unique within (dataset, split); stable across runs (the resume key)."""
    group: str
    """The image (or bag frame) the sample is asked on: samples of a group run back to back,
    share the decoded image and the engine's frame prefix, and stay on one rank."""
    text: str
    """The referring sentence or query, normalised as the dataset's official loader does."""
    source: str
    """Where the image is, for people (a path, or bag + stamp)."""
    image: Callable[[], np.ndarray] | None = None
    """-> (H, W, 3) uint8 RGB; raises DataError."""
    truth: Callable[[tuple[int, int]], np.ndarray] | None = None
    """(H, W) of the image -> (H, W) uint8 ground truth (1 object, 0 background, 2 overlap);
    raises DataError."""
    problem: str = ""
    """Non-empty: the sample is unusable for this reason (recorded, never run)."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """Dataset ids worth keeping in the per-sample record (ref_id, sent_id, ann_ids, ...)."""

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.split}/{self.id}"


@dataclass
class Split:
    """The samples of one split, in the dataset's order, and what its loader noticed."""

    dataset: str
    split: str
    samples: list[Sample]
    notes: dict[str, Any] = field(default_factory=dict)
    """Counts worth reporting (e.g. where the official loader would decode differently)."""

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.split}"


def read_rgb(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, read as ``stamp-ros segment`` reads it (PIL,
    ``convert("RGB")``, no EXIF rotation: the official evaluation does the same)."""
    from stamp_ros.engine.options import read_image

    try:
        return read_image(path)
    except InputError as exc:
        raise DataError(str(exc)) from exc
