"""``stamp-ros bag --track``: /stamp/tracks for every frame of a recorded bag, the node's
tracking semantics in bag time (issue 19), without ROS.

The bag is a 30 Hz camera panning 3 px per frame over a textured canvas; the model is the tiny
test checkpoint (one mask of its coarse grid per answer). Helpers (bag writing and reading,
the ROS-blocking launcher) are test_bag's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")

from test_bag import (
    BLOCK_ROS,
    REPO,
    SMALL,
    T0,
    image_msg,
    pixels,
    read_bag,
    run_bag,
    write_bag,
)

from stamp_ros.client.result import SegmentResult
from stamp_ros.render.palette import color_for
from stamp_ros.testing.checkpoint import make_test_checkpoint
from stamp_ros.testing.scenes import PanScene

PERIOD_NS = 1_000_000_000 // 30
PAN = 3
N = 45
QUERY = "Please segment the square."


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_test_checkpoint(tmp_path_factory.mktemp("track") / "ckpt",
                                answer="Here: <|seg|>", seed=2)


@pytest.fixture(scope="module")
def pan_bag(tmp_path_factory) -> Path:
    scene = PanScene(size=(320, 240), velocity=(PAN, 0), frames=N, seed=5,
                     object_box=(100, 60, 120, 100))
    return write_bag(tmp_path_factory.mktemp("track") / "pan",
                     [("/camera/image", T0 + i * PERIOD_NS,
                       image_msg(scene.frame(i), T0 + i * PERIOD_NS)) for i in range(N)])


def frame_of(msg) -> int:
    """The frame index of a message, from its header stamp."""
    t = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
    return round((t - T0) / PERIOD_NS)


def model_frame_of(msg) -> int:
    t = int(msg.model_stamp.sec) * 1_000_000_000 + int(msg.model_stamp.nanosec)
    return round((t - T0) / PERIOD_NS)


def shift_found(tracked: np.ndarray, model: np.ndarray, max_dx: int) -> int:
    """The leftward shift of ``model`` that best matches ``tracked``."""
    width = model.shape[1] - max_dx
    scores = []
    for dx in range(max_dx + 1):
        moved = np.zeros_like(model)
        moved[:, : model.shape[1] - dx] = model[:, dx:]
        a, b = tracked[:, :width], moved[:, :width]
        union = np.logical_or(a, b).sum()
        scores.append(np.logical_and(a, b).sum() / union if union else 0.0)
    return int(np.argmax(scores))


def test_model_every_n_frames_tracks_every_frame(ckpt, pan_bag, tmp_path, capsys):
    """--model-every 10: answers on frames 0, 10, 20, ...; every frame has its tracks message,
    written at its own time, propagated except on answered frames, grounded on the newest
    answer, with the answers' track ids; the masks in between follow the pan; the video has
    every frame."""
    out, video = tmp_path / "out", tmp_path / "tracks.mp4"
    code, stdout, err = run_bag([str(pan_bag), "--image-topic", "/camera/image", "--query",
                                 QUERY, "--out", str(out), "--track", "--model-every", "10",
                                 "--video", str(video), "--json", "--model", str(ckpt),
                                 *SMALL], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["results"] == 5 and summary["tracked_frames"] == N
    assert summary["video_frames"] == N
    assert summary["topics"]["/stamp/tracks"] == N and summary["topics"]["/stamp/overlay"] == N
    bag = read_bag(out)
    results = {frame_of(m): m for _, m in bag["/stamp/result"]}
    assert sorted(results) == [0, 10, 20, 30, 40]
    ids = {tuple(inst.track_id for inst in m.instances) for m in results.values()}
    assert all(tid > 0 for t in ids for tid in t)
    tracks = bag["/stamp/tracks"]
    assert [frame_of(m) for _, m in tracks] == list(range(N))
    moved = 0
    for t_ns, msg in tracks:
        i = frame_of(msg)
        assert t_ns == T0 + i * PERIOD_NS
        assert msg.propagated == (i % 10 != 0)
        k = model_frame_of(msg)
        assert k == i - i % 10
        answer = results[k]
        by_id = {inst.track_id: inst for inst in answer.instances}
        frame = SegmentResult.from_msg(msg)
        for obj in frame.objects:
            assert obj.track_id in by_id
            model = SegmentResult.from_msg(answer).objects[
                list(by_id).index(obj.track_id)].mask
            if i % 10 >= 4 and np.any(model[:, 1:] != model[:, :-1]):
                assert abs(shift_found(obj.mask, model, PAN * 10) - PAN * (i - k)) <= 2
                moved += 1
    assert moved >= 5
    # Every tracked frame's detections and label image (ids = track ids), at its bag time.
    from test_detections import check_2d, check_labels

    for group, messages in (("/stamp/tracks/", tracks), ("/stamp/", bag["/stamp/result"])):
        dets, labels = bag[f"{group}detections"], bag[f"{group}labels"]
        assert [t for t, _ in dets] == [t for t, _ in labels] == [t for t, _ in messages]
        for (_, msg), (_, det), (_, label) in zip(messages, dets, labels, strict=True):
            assert all(d.id == str(inst.track_id) for d, inst in zip(
                det.detections, msg.instances, strict=True))
            check_2d(msg, det)
            check_labels(msg, label)
    # The overlay of every frame draws each track in its id's colour (outline and label box).
    for (_, overlay), (_, msg) in zip(bag["/stamp/overlay"], tracks, strict=True):
        assert overlay.header.stamp == msg.header.stamp
        image = pixels(overlay)
        for inst in msg.instances:
            solid = np.all(image == np.array(color_for(inst.track_id), np.uint8), axis=2)
            assert solid.sum() > 50, f"track {inst.track_id} not drawn in its colour"


def test_model_period_answers_arrive_late_and_ground_later_frames(ckpt, pan_bag, tmp_path,
                                                                   capsys):
    """--model-period 0.2: the model takes a frame when free and its answer arrives 0.2 bag
    seconds later (6 frames at 30 Hz); /stamp/result is written at that time, the frames from
    then on are grounded on it, everything before on the answer before; no frame's tracks are
    the model's own (propagated throughout)."""
    out = tmp_path / "out"
    code, _, err = run_bag([str(pan_bag), "--image-topic", "/camera/image", "--query",
                                 QUERY, "--out", str(out), "--track", "--model-period", "0.2",
                                 "--json", "--model", str(ckpt), *SMALL], capsys)
    assert code == 0, err
    bag = read_bag(out)
    answered = [(t_ns, frame_of(m)) for t_ns, m in bag["/stamp/result"]]
    delay = 200_000_000
    assert [k for _, k in answered] == [0, 7, 14, 21, 28, 35, 42]
    assert all(t_ns == T0 + k * PERIOD_NS + delay for t_ns, k in answered)
    tracks = bag["/stamp/tracks"]
    assert [frame_of(m) for _, m in tracks] == list(range(7, N))  # from the first answer on
    for t_ns, msg in tracks:
        assert msg.propagated
        due = [k for t, k in answered if t <= t_ns]
        assert model_frame_of(msg) == due[-1]


def test_track_options_are_checked_before_the_model_loads(pan_bag, tmp_path, capsys):
    base = [str(pan_bag), "--image-topic", "/camera/image", "--out", str(tmp_path / "o"),
            "--model", str(tmp_path / "no-such-model")]
    code, _, err = run_bag([*base, "--query-topic", "/q", "--track"], capsys)
    assert code == 2 and "--track needs --query" in err
    code, _, err = run_bag([*base, "--query", QUERY, "--model-every", "3"], capsys)
    assert code == 2 and "go with --track" in err
    code, _, err = run_bag([*base, "--query", QUERY, "--track", "--track-min-iou", "0"],
                           capsys)
    assert code == 2 and "track_min_iou" in err


def test_track_without_ros(ckpt, pan_bag, tmp_path):
    """The tracking path imports nothing of ROS either (the subprocess blocks it)."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_ROS, "bag", str(pan_bag), "--image-topic",
         "/camera/image", "--query", QUERY, "--out", str(out), "--track", "--model-every",
         "15", "--max-frames", "20", "--json", "--model", str(ckpt), *SMALL],
        capture_output=True, text=True, timeout=600, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["tracked_frames"] == 20 and summary["results"] == 2
    assert summary["topics"]["/stamp/tracks"] == 20
