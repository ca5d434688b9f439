"""The stamp-ros command line: JSON schema, mask files and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stamp_ros.cli.main import EXIT_CHECKPOINT, EXIT_INPUT, main
from stamp_ros.testing.checkpoint import make_test_checkpoint
from stamp_ros.testing.images import sample_image

SMALL = ["--min-pixels", str(56 * 56), "--max-pixels", str(112 * 112), "--device", "cpu"]


@pytest.fixture(scope="session")
def cli_ckpt(tmp_path_factory):
    return make_test_checkpoint(
        tmp_path_factory.mktemp("cli") / "ckpt", answer="Here: <|seg|> and <|seg|>", seed=2
    )


@pytest.fixture(scope="session")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(sample_image(3, 60, 80)).save(path)
    return path


def segment_subprocess(ckpt: Path, image: Path, query: str, *extra: str):
    """``python -m stamp_ros.cli segment ... --json`` in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "stamp_ros.cli", "segment", "--model", str(ckpt), "--image",
         str(image), "--query", query, "--json", *extra, *SMALL],
        capture_output=True, text=True, timeout=300)


def test_segment_json_subprocess(cli_ckpt, image_file, tmp_path):
    out_dir = tmp_path / "masks"
    proc = segment_subprocess(cli_ckpt, image_file, "segment both", "--out-dir", str(out_dir))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # exactly one JSON object, nothing else on stdout
    assert set(data) == {"text", "instances", "image_size", "timings_ms"}
    assert data["text"] == "Here:  and"
    assert data["image_size"] == [80, 60]
    assert len(data["instances"]) == 2
    for k, inst in enumerate(data["instances"]):
        assert set(inst) == {"grid", "bbox", "area", "score", "mask_png"}
        grid = np.array(inst["grid"])
        assert grid.ndim == 2 and set(np.unique(grid)) <= {0, 1}
        assert len(inst["bbox"]) == 4 and isinstance(inst["area"], int)
        assert 0.0 <= inst["score"] <= 1.0
        png = np.asarray(Image.open(inst["mask_png"]))
        assert inst["mask_png"].endswith(f"mask_{k}.png")
        assert png.shape == (60, 80) and set(np.unique(png)) <= {0, 255}
        assert int((png > 0).sum()) == inst["area"]
    for key in ("preprocess", "generate", "mask", "postprocess", "total"):
        assert key in data["timings_ms"]


def test_bad_image_exit_code_subprocess(cli_ckpt, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    proc = segment_subprocess(cli_ckpt, bad, "x")
    assert proc.returncode == EXIT_INPUT
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stamp-ros: error:") and "bad.png" in lines[0]


def test_empty_query_and_bad_model_in_process(cli_ckpt, image_file, tmp_path, capsys):
    assert (
        main(
            [
                "segment",
                "--model",
                str(cli_ckpt),
                "--image",
                str(image_file),
                "--query",
                "  ",
                *SMALL,
            ]
        )
        == EXIT_INPUT
    )
    assert "query is empty" in capsys.readouterr().err
    not_stamp = make_test_checkpoint(tmp_path / "plain", classifier=False)
    capsys.readouterr()
    assert (
        main(
            [
                "segment",
                "--model",
                str(not_stamp),
                "--image",
                str(image_file),
                "--query",
                "x",
                *SMALL,
            ]
        )
        == EXIT_CHECKPOINT
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classifier" in err[0]


def test_human_output_and_make_test_checkpoint(tmp_path, image_file, capsys):
    assert main(["make-test-checkpoint", str(tmp_path / "c"), "--answer", "Found: <|seg|>"]) == 0
    assert (tmp_path / "c" / "model.safetensors").exists()
    capsys.readouterr()
    assert (
        main(
            [
                "segment",
                "--model",
                str(tmp_path / "c"),
                "--image",
                str(image_file),
                "--query",
                "find",
                *SMALL,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("answer: Found:") and "mask 0:" in out
