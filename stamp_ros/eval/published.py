"""The paper's published numbers, to print beside the measured ones.

Source: ``shared/docs/eval-protocol.md`` ("Published numbers"), the STAMP paper's tables:
cIoU (%) for RefCOCO/+/g, gIoU / cIoU (%) for gRefCOCO, "grid only" (the decoder-free mask) and
"+ SAM" (refined with SAM ViT-H). Check them against the paper's PDF before quoting; the
STAMP-2B row may belong to a segmentation-only 2B model rather than the released ``-uni`` one.
"""

from __future__ import annotations

__all__ = ["GREF_SPLITS", "PUBLISHED", "REFER_TABLE", "model_family", "published"]

REFER_TABLE = (
    ("refcoco", "val"), ("refcoco", "testA"), ("refcoco", "testB"),
    ("refcoco+", "val"), ("refcoco+", "testA"), ("refcoco+", "testB"),
    ("refcocog", "val"), ("refcocog", "test"),
)
"""The columns of the paper's RES table, in order (its "avg" is the mean of these 8)."""
GREF_SPLITS = ("val", "testA", "testB")


def _refer(values: tuple[float, ...]) -> dict:
    return {key: {"ciou": v} for key, v in zip(REFER_TABLE, values, strict=True)}


def _gref(pairs: tuple[tuple[float, float], ...]) -> dict:
    return {("grefcoco", s): {"giou": g, "ciou": c}
            for s, (g, c) in zip(GREF_SPLITS, pairs, strict=True)}


PUBLISHED: dict[str, dict[str, dict[tuple[str, str], dict[str, float]]]] = {
    "STAMP-2B": {
        "grid": {**_refer((77.7, 79.4, 76.1, 73.4, 76.4, 69.7, 74.9, 75.1)),
                 **_gref(((73.9, 70.3), (73.6, 73.7), (67.5, 68.1)))},
        "sam": {**_refer((81.9, 83.7, 79.5, 77.1, 80.5, 72.7, 78.5, 78.8)),
                **_gref(((76.4, 72.2), (76.5, 75.7), (70.0, 69.8)))},
    },
    "STAMP-7B": {
        "grid": {**_refer((78.1, 79.2, 76.8, 74.7, 77.6, 70.9, 75.7, 76.2)),
                 **_gref(((74.4, 70.9), (73.8, 74.7), (68.1, 69.1)))},
        "sam": {**_refer((83.1, 84.5, 80.8, 79.4, 82.8, 74.6, 79.9, 80.4)),
                **_gref(((77.6, 73.6), (77.6, 77.2), (71.4, 71.6)))},
    },
}
PUBLISHED_AVG = {("STAMP-2B", "grid"): 75.3, ("STAMP-7B", "grid"): 76.2,
                 ("STAMP-2B", "sam"): 79.1, ("STAMP-7B", "sam"): 80.7}


def model_family(model: str) -> str | None:
    """"STAMP-2B" / "STAMP-7B" from a model id or path, None when the name does not say."""
    name = str(model).lower().replace("_", "-")
    for size in ("7b", "2b"):
        if f"-{size}" in name or name.startswith(size) or f"/{size}" in name:
            return f"STAMP-{size.upper()}"
    return None


def published(family: str | None, mask: str, dataset: str, split: str) -> dict[str, float]:
    """The published metrics (%) of one table cell, or {} when the paper has none."""
    if family is None:
        return {}
    return dict(PUBLISHED.get(family, {}).get(mask, {}).get((dataset, split), {}))
