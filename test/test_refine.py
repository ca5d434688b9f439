"""SAM refinement (``refine='sam'``) with a tiny random SAM built from segment-anything's classes.

The refiner reads the architecture off the checkpoint, loads it with ``weights_only=True``,
and runs on STAMP's coarse masks in the engine and through ``stamp-ros segment``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stamp_ros.engine.errors import CheckpointError
from stamp_ros.engine.refine import SamRefiner, load_sam
from stamp_ros.testing.checkpoint import make_test_checkpoint
from stamp_ros.testing.images import sample_image
from stamp_ros.testing.sam import TinySam, make_test_sam

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--min-pixels", str(56 * 56), "--max-pixels", str(112 * 112)]
ANSWER = "Here: <|seg|> and <|seg|>"


@pytest.fixture(scope="module")
def sam_pth(tmp_path_factory) -> Path:
    return make_test_sam(tmp_path_factory.mktemp("sam") / "tiny_sam.pth")


@pytest.fixture(scope="module")
def stamp_ckpt(tmp_path_factory) -> Path:
    return make_test_checkpoint(tmp_path_factory.mktemp("stamp") / "ckpt", answer=ANSWER, seed=4)


@pytest.mark.parametrize(
    "shape",
    [TinySam(), TinySam(embed_dim=48, depth=3, num_heads=3, global_attn_indexes=(0, 2),
                        window_size=8, prompt_dim=16, decoder_depth=1)],
    ids=["default", "other"],
)
def test_architecture_is_read_from_the_checkpoint(tmp_path, shape):
    path = make_test_sam(tmp_path / "sam.pth", shape, seed=1)
    saved = torch.load(path, weights_only=True)
    sam = load_sam(path)
    loaded = sam.state_dict()
    assert loaded.keys() == saved.keys()
    for key, tensor in saved.items():
        assert torch.equal(loaded[key], tensor), key
    blocks = sam.image_encoder.blocks
    assert len(blocks) == shape.depth
    for i, block in enumerate(blocks):
        assert block.window_size == (0 if i in shape.global_attn_indexes else shape.window_size)
        assert block.attn.num_heads == shape.num_heads
    assert len(sam.mask_decoder.transformer.layers) == shape.decoder_depth


def test_refined_masks_are_full_size_deterministic_and_not_the_coarse_ones(sam_pth):
    refiner = SamRefiner.create("sam", str(sam_pth))
    image = sample_image(3, 120, 160)
    coarse = [np.zeros((120, 160), np.uint8) for _ in range(3)]
    coarse[0][30:60, 40:80] = 1
    coarse[1][70:115, 10:150] = 1  # coarse[2] stays empty: nothing to refine
    refined = refiner.refine(image, coarse)
    assert len(refined) == 3
    for mask in refined:
        assert mask.shape == (120, 160) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1}
    assert not np.array_equal(refined[0], coarse[0]) and refined[0].any()
    assert not np.array_equal(refined[1], coarse[1]) and refined[1].any()
    assert not refined[2].any()
    again = refiner.refine(image, coarse)  # seeded point sampling: same result
    for a, b in zip(refined, again, strict=True):
        np.testing.assert_array_equal(a, b)
    # The image matters (it is encoded once per call and prompts the decoder).
    other = refiner.refine(sample_image(9, 120, 160), coarse)
    assert not np.array_equal(other[0], refined[0])


class _Payload:
    """Pickles to ``open(marker, "w")``: loading it with plain pickle creates the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_runs_code_is_refused(tmp_path, sam_pth):
    evil = tmp_path / "evil.pth"
    marker = tmp_path / "pwned"
    state = torch.load(sam_pth, weights_only=True)
    torch.save({**state, "extra": _Payload(marker)}, evil)
    # The payload is live: a plain (weights_only=False) load runs it.
    torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match="weights_only=True"):
        SamRefiner.create("sam", str(evil))
    assert not marker.exists()


def test_bad_sam_checkpoints_are_clear(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        SamRefiner.create("sam", str(other))
    with pytest.raises(CheckpointError, match="checkpoint file"):
        SamRefiner.create("sam", str(tmp_path / "missing.pth"))


def _segment(ckpt: Path, image: Path, out_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stamp_ros.cli", "segment", "--model", str(ckpt), "--device",
         "cpu", "--image", str(image), "--query", "Please segment the blobs.", "--json",
         "--out-dir", str(out_dir), *SMALL, *extra],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )


def _masks(data: dict) -> list[np.ndarray]:
    return [np.asarray(Image.open(i["mask_png"])) > 0 for i in data["instances"]]


def test_cli_refine_sam(tmp_path, stamp_ckpt, sam_pth):
    image = tmp_path / "photo.png"
    Image.fromarray(sample_image(5, 150, 200)).save(image)
    plain = _segment(stamp_ckpt, image, tmp_path / "plain")
    refined = _segment(stamp_ckpt, image, tmp_path / "sam", "--refine", "sam",
                       "--sam-checkpoint", str(sam_pth))
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert refined.returncode == 0, refined.stderr[-2000:]
    a, b = json.loads(plain.stdout), json.loads(refined.stdout)
    assert a["text"] == b["text"] and len(a["instances"]) == len(b["instances"]) == 2
    for x, y in zip(a["instances"], b["instances"], strict=True):
        assert x["grid"] == y["grid"]  # refinement works on the full-resolution masks only
    coarse, fine = _masks(a), _masks(b)
    for c, f in zip(coarse, fine, strict=True):
        assert c.shape == f.shape == (150, 200)
        assert not np.array_equal(c, f)


def test_cli_refuses_code_carrying_sam_checkpoint(tmp_path, stamp_ckpt, sam_pth):
    image = tmp_path / "photo.png"
    Image.fromarray(sample_image(5, 60, 80)).save(image)
    evil, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    torch.save({"x": _Payload(marker)}, evil)
    proc = _segment(stamp_ckpt, image, tmp_path / "out", "--refine", "sam",
                    "--sam-checkpoint", str(evil))
    assert proc.returncode == 3, proc.stderr[-2000:]  # unusable checkpoint
    assert "weights_only=True" in proc.stderr and not proc.stdout
    assert not marker.exists()
