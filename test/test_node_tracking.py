"""Tracking with the real node (issue 19): ``~/tracks`` on every camera frame between the
model's answers, ``track_id`` kept across answers, the ``~/track`` service and the planner API.

The node runs in its own process with a tiny random-weight checkpoint (one mask per answer,
made of the model's 3x4 grid cells, so 160-pixel blocks at 640x480). The camera is the test:
a textured canvas panned 3 px per frame (stamps 1000 + frame index), or a still image.
Everything waits on messages; the stream is paced at 30 Hz, never used as a clock.
"""

from __future__ import annotations

import numpy as np
import pytest
from feature_helpers import Caller, make_test_checkpoint, set_ok
from node_harness import (
    PacedCamera,
    image_msg,
    make_long_answer_checkpoint,
    start_node,
    wait_output,
)

from stamp_ros.testing.scenes import PanScene

pytestmark = pytest.mark.ros

ANSWER = "Sure, it is here: <|seg|>"
QUERY = "segment the square"
FIRST = 1000
PAN = 3
PERIOD = 1.0 / 30
MIN_LAG = 3
"""Frames between an answer and a tracked frame for its motion check (9 px of pan)."""
MAX_SHIFT = 120
"""Pans checked: below one 160-px grid cell minus the search margin."""
MOVED_CHECKS = 10
"""Tracked frames whose masks must be shown to have moved with the pan."""
TIMEOUT = 120.0
"""Generous: the tiny model answers in well under a second, a loaded machine may not."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-track", seed=0,
                                answer=ANSWER)


@pytest.fixture(scope="module")
def slow_checkpoint(tmp_path_factory):
    """Writes 60 words before its mask: with reanswer_every 1 every answer decodes them, longer
    than MIN_LAG camera frames on any CPU, so tracked frames lie between answers (and short
    enough here that the pan since an answer stays well inside the frame)."""
    return make_long_answer_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-slow", 60)


def stamp_of(msg) -> int:
    return int(msg.header.stamp.sec)


def mask_of(inst) -> np.ndarray:
    from stamp_ros.client.result import mask_from_image

    return mask_from_image(inst.mask)


def pan_shift(mask: np.ndarray, dx: int) -> np.ndarray:
    """``mask`` moved left by ``dx`` (what a pan of dx to the right does to the image)."""
    out = np.zeros_like(mask)
    out[:, : mask.shape[1] - dx] = mask[:, dx:]
    return out


def shift_iou(tracked: np.ndarray, model: np.ndarray, dx: int, width: int) -> float:
    """IoU of ``tracked`` and ``model`` moved left by ``dx``, over the first ``width`` columns
    (those both still see)."""
    a, b = tracked[:, :width], pan_shift(model, dx)[:, :width]
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def best_shift(tracked: np.ndarray, model: np.ndarray, low: int, high: int) -> tuple[int, float]:
    """The leftward shift in [low, high] of ``model`` that fits ``tracked`` best, and its IoU.
    The range stays below one grid cell (160 px): a mask of whole cells moved by a whole cell
    can look like itself."""
    width = model.shape[1] - high
    return max(((dx, shift_iou(tracked, model, dx, width)) for dx in range(low, high + 1)),
               key=lambda pair: pair[1])


def far_from_answer(tracks: list, answered: list) -> int:
    """Tracks messages at least MIN_LAG frames after the answer they were grounded on, whose
    answer's masks show the pan: what the motion check can use."""
    usable = {stamp_of(r) for r in answered
              if any(shows_pan(mask_of(inst)) for inst in r.instances)}
    return sum(1 for m in tracks if m.propagated and m.model_stamp.sec in usable
               and MIN_LAG * PAN <= PAN * (stamp_of(m) - m.model_stamp.sec) <= MAX_SHIFT)


def shows_pan(mask: np.ndarray) -> bool:
    """The mask changes along rows in the columns every comparison sees (a pan moves it)."""
    seen = mask[:, : mask.shape[1] - MAX_SHIFT - 30]
    return bool(np.any(seen[:, 1:] != seen[:, :-1]))


class Stream(PacedCamera):
    """The test's camera: frame i of ``scene`` published with stamp FIRST + i."""

    def __init__(self, ros_client, scene) -> None:
        super().__init__(ros_client, PERIOD)
        self.scene = scene

    def message(self, i: int):
        return image_msg(self.scene.frame(i), stamp_sec=FIRST + i, frame_id="cam")


def start_tracking(processes, ros_client, checkpoint, **params):
    from stamp_ros.msg import Segmentation
    from std_msgs.msg import String

    node = start_node(processes, ros_client, checkpoint, mode="continuous", track=True,
                      **params)
    tracks = ros_client.subscribe(Segmentation, "/stamp_node/tracks", ros_client.reliable(100))
    results = ros_client.subscribe(Segmentation, "/stamp_node/result", ros_client.reliable(100))
    query_pub = ros_client.publisher(String, "/query")
    ros_client.wait_for_subscribers(query_pub)
    query_pub.publish(String(data=QUERY))
    wait_output(processes, node, "tracking", timeout=60)
    return node, tracks, results


def test_panning_stream_gets_tracks_on_every_frame_moving_with_the_pan(
        processes, ros_client, slow_checkpoint):
    """30 Hz panning stream: once the model answered, every frame gets its ~/tracks message,
    stamped with that frame; the masks between answers are the model's mask moved by the pan
    since its frame; ~/result carries the track ids and is never propagated. Then a burst that
    the node cannot keep up with one by one: frames may be skipped (newest first), never
    reordered or duplicated, and the newest always gets its tracks."""
    node, tracks, results = start_tracking(processes, ros_client, slow_checkpoint,
                                           reanswer_every=1, max_new_tokens=80)
    scene = PanScene(velocity=(PAN, 0), frames=1300, seed=0)
    stream = Stream(ros_client, scene)

    # Phase 1: at 30 Hz until tracks arrive, then frame i+1 only after frame i's tracks
    # arrived (each frame is then the newest when it is published: nothing may skip it).
    lockstep_start = None
    while True:
        i = stream.publish()
        if lockstep_start is None and tracks.messages:
            lockstep_start = i
        if lockstep_start is not None:
            tracks.wait_for(1, timeout=TIMEOUT, where=lambda m, s=FIRST + i: stamp_of(m) == s)
        answered = [r for r in results.messages if r.success]
        if lockstep_start is not None and len(answered) >= 3 and i - lockstep_start >= 60 \
                and far_from_answer(tracks.messages, answered) >= MOVED_CHECKS:
            break
        assert i < 1200, (f"after {i} frames: {len(answered)} answers, lock-step from "
                         f"{lockstep_start}:\n" + processes.output(node)[-3000:])
    lockstep_end = i

    # Phase 2: a burst of 30 frames at 30 Hz, no waiting.
    burst = [stream.publish() for _ in range(30)]
    tracks.wait_for(1, timeout=TIMEOUT, where=lambda m: stamp_of(m) == FIRST + burst[-1])

    got = [stamp_of(m) - FIRST for m in tracks.messages]
    counters = [int(m.request_id[1:]) for m in tracks.messages]  # the node's frame counter
    assert all(m.request_id.startswith("t") for m in tracks.messages)
    assert counters == sorted(set(counters))
    assert len(got) == len(set(got)) and got == sorted(got), "one message per frame, in order"
    assert set(range(lockstep_start, lockstep_end + 1)) <= set(got), "every frame tracked"
    assert set(got) <= set(range(stream.sent))
    answers = {stamp_of(r): r for r in results.messages if r.success}
    assert all(r.model_stamp == r.header.stamp and not r.propagated for r in answers.values())

    checked = 0
    for msg in tracks.messages:
        assert msg.success and msg.query == QUERY and msg.header.frame_id == "cam"
        i = stamp_of(msg) - FIRST
        k = int(msg.model_stamp.sec) - FIRST
        assert 0 <= k <= i, "grounded on an earlier (or this) frame"
        assert FIRST + k in answers, f"model_stamp {k} is no ~/result"
        assert all(inst.track_id > 0 for inst in answers[FIRST + k].instances)
        for inst in msg.instances:
            # The answer that last grounded this track (a track the newest answer missed
            # lives on until track_max_misses answers in a row missed it).
            keyed = [a for s, a in sorted(answers.items()) if s - FIRST <= k
                     and inst.track_id in {j.track_id for j in a.instances}]
            assert keyed, f"track {inst.track_id} comes from no answer"
            answer = keyed[-1]
            if not msg.propagated:
                continue
            dx = PAN * (i - (stamp_of(answer) - FIRST))
            model = mask_of(next(j for j in answer.instances if j.track_id == inst.track_id))
            if dx < MIN_LAG * PAN or dx > MAX_SHIFT or not shows_pan(model):
                continue
            tracked = mask_of(inst)
            found, iou = best_shift(tracked, model, max(0, dx - 30), dx + 30)
            still = shift_iou(tracked, model, 0, model.shape[1] - dx - 30)
            assert abs(found - dx) <= 2 and iou >= 0.9 and still < iou, (
                f"frame {i} (track {inst.track_id} from the answer of frame "
                f"{stamp_of(answer) - FIRST}): the mask moved {found} px (IoU {iou:.2f}, "
                f"unmoved {still:.2f}), the pan {dx} px")
            checked += 1
    assert checked >= MOVED_CHECKS, f"only {checked} masks far enough from their answer"


def test_static_scene_keeps_track_ids_across_answers(processes, ros_client, checkpoint):
    """A still camera: consecutive model answers (decoded, then teacher-forced) keep their
    track ids, and every ~/tracks message carries the same ids."""
    node, tracks, results = start_tracking(processes, ros_client, checkpoint,
                                           reanswer_every=2)

    class Still:
        def __init__(self):
            self.image = PanScene(velocity=(0, 0), frames=1, seed=1).frame(0)

        def frame(self, i):
            return self.image

    stream = Stream(ros_client, Still())
    while len([r for r in results.messages if r.success]) < 5:
        stream.publish()
        assert stream.sent < 3000, processes.output(node)[-3000:]
    answered = [r for r in results.messages if r.success][:5]
    ids = [[inst.track_id for inst in r.instances] for r in answered]
    assert ids[0] and all(t > 0 for t in ids[0]), ids
    assert ids == [ids[0]] * len(ids), ids
    assert any(r.answer_reused for r in answered) and not answered[0].answer_reused
    tracks.wait_for(1, timeout=TIMEOUT)
    assert {inst.track_id for m in tracks.messages for inst in m.instances} == set(ids[0])


def test_client_track_refused_then_tracks_and_stops(processes, ros_client, checkpoint):
    """StampClient.track: refused with the reason in once mode; with mode continuous and
    track true it returns a session whose latest frame has tracked objects and whose callback
    sees every frame; stop() ends tracking (later frames get no tracks)."""
    from stamp_ros.msg import Segmentation

    from stamp_ros.client import StampClient, StampClientError

    node = start_node(processes, ros_client, checkpoint)
    tracks = ros_client.subscribe(Segmentation, "/stamp_node/tracks", ros_client.reliable(100))
    stamp = StampClient(ros_client.node)
    try:
        with pytest.raises(StampClientError, match="mode:=continuous and track:=true"):
            stamp.track(QUERY)
        set_ok(ros_client, mode="continuous", track=True)
        seen = []
        session = stamp.track(QUERY, callback=seen.append)
        assert session.tracks_topic == "/stamp_node/tracks"
        stream = Stream(ros_client, PanScene(velocity=(PAN, 0), frames=400, seed=2))
        while session.frames < 5:
            stream.publish()
            assert stream.sent < 400, processes.output(node)[-3000:]
        frame = session.latest
        assert frame is not None and frame.query == QUERY
        assert frame.objects and all(o.track_id > 0 for o in frame.objects)
        assert frame.model_stamp > 0 and frame.stamp >= frame.model_stamp
        assert len(seen) == session.frames and seen[-1] is session.latest
        stream.publish()
        nxt = session.wait_for_frame(timeout=TIMEOUT)
        assert nxt.stamp > frame.stamp

        session.stop()
        wait_output(processes, node, "~/track, camera default: stopped", timeout=30)
        stopped_at = stream.sent
        # Frames after the stop, until a request is answered on one of them: the node has
        # then taken them in, and tracked none.
        segment = Caller(ros_client)
        while True:
            stream.publish()
            res = segment(timeout=TIMEOUT)
            assert res.success, res.error
            if stamp_of(res) >= FIRST + stopped_at:
                break
            assert stream.sent < stopped_at + 100
        assert tracks.messages and all(stamp_of(m) < FIRST + stopped_at
                                       for m in tracks.messages)
        assert session.frames == len(seen)
        assert all(f.stamp < FIRST + stopped_at for f in seen)
    finally:
        stamp.destroy()


def test_track_service_reasons(processes, ros_client, checkpoint):
    """~/track answers every call: unknown camera, empty query = stop, refused query."""
    from stamp_ros.srv import Track

    start_node(processes, ros_client, checkpoint, mode="continuous", track=True)

    def call(query, camera=""):
        req = Track.Request()
        req.query, req.camera = query, camera
        return ros_client.call(Track, "/stamp_node/track", req, timeout=60)

    res = call(QUERY, camera="wrist")
    assert not res.success and "unknown camera 'wrist'" in res.error
    res = call("x" * 5000)
    assert not res.success and res.error
    res = call(QUERY)
    assert res.success and res.tracks_topic == "/stamp_node/tracks", res.error
    res = call("")
    assert res.success


def test_resolution_and_track_max_side_changes_never_turn_an_answer_into_an_error(
        processes, ros_client, slow_checkpoint):
    """Tracking never fails a model answer. The camera switches between 640x480 and 480x360
    (another working size) while the model is answering a frame of the old size, then
    ``track_max_side`` changes while an answer is in flight: every ~/result is a success, and
    after each change the tracks come back at the frames' size."""
    node, tracks, results = start_tracking(processes, ros_client, slow_checkpoint,
                                           reanswer_every=1, max_new_tokens=80)
    scenes = {size: PanScene(size=size, velocity=(0, 0), frames=1, seed=0)
              for size in ((640, 480), (480, 360))}

    class Sized:
        size = (640, 480)

        def frame(self, i):
            return scenes[self.size].frame(0)

    camera = Sized()
    stream = Stream(ros_client, camera)

    def errors() -> list[str]:
        return [f"frame {stamp_of(r) - FIRST}: {r.error}" for r in results.messages
                if not r.success]

    def tracked_at_size(since: int) -> None:
        """Frames until an answer on a frame from ``since`` on was published and a later
        frame got tracks of the current size."""
        width = camera.size[0]
        while True:
            stream.publish()
            answered = [r for r in results.messages if stamp_of(r) >= FIRST + since]
            grounded = [m for m in tracks.messages if stamp_of(m) >= FIRST + since
                        and m.instances and m.instances[0].mask.width == width]
            if answered and grounded:
                return
            assert not errors(), errors()
            assert stream.sent < since + 600, (
                f"size {camera.size}: {len(answered)} answers, {len(grounded)} tracked "
                f"frames since frame {since}:\n" + processes.output(node)[-3000:])

    tracked_at_size(0)
    for size in ((480, 360), (640, 480), (480, 360)):  # the model is busy on the old size
        camera.size = size
        tracked_at_size(stream.sent)

    for side in (200, 480, 160):
        # The tracks of a frame at the old side, then the change with no newer frame: the
        # answer in flight is grounded after the change, before any frame at the new side.
        last = stream.publish()
        tracks.wait_for(1, timeout=TIMEOUT, where=lambda m, s=FIRST + last: stamp_of(m) == s)
        set_ok(ros_client, track_max_side=side)
        results.wait_for(1, timeout=TIMEOUT, where=lambda m, s=FIRST + last: stamp_of(m) == s)
        tracked_at_size(stream.sent)
    assert not errors(), errors()
    assert all(r.success for r in results.messages)
