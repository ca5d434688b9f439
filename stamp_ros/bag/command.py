"""``stamp-ros bag``: a recorded rosbag2 in, an annotated MCAP bag (and a video) out. No ROS.

Order of work, so that every bad input fails in seconds with one line and nothing half-written:
the arguments, the input bag and its topics, the output and video paths, and only then the
model. Ctrl-C (or SIGTERM) stops at once, cancelling the frame in progress, and the bag and
video are closed with every frame done so far (exit 130); a second Ctrl-C aborts harder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stamp_ros.engine.errors import EngineError, InputError
from stamp_ros.engine.options import non_negative, positive_int

__all__ = ["cmd_bag", "register"]

logger = logging.getLogger("stamp_ros.bag")

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
RATE_SAMPLE = 50
"""Frames whose timestamps give the bag's frame rate (the video's default fps)."""
QUERY_VIDEO_FPS = 1.0
"""Default video rate in once mode: one result per second, long enough to read the answer."""


def _model_period(text: str) -> float | None:
    if text == "real":
        return None
    return non_negative(text)


def register(sub: argparse._SubParsersAction) -> None:
    from stamp_ros.engine.options import add_model_options
    from stamp_ros.pipeline.params import BY_NAME, TRACKER_PARAMS

    def default(name: str) -> Any:
        return BY_NAME[name].default

    p = sub.add_parser(
        "bag",
        help="replay a rosbag2 (sqlite3/MCAP) through the model: annotated MCAP bag + video",
        description="Replay a recorded rosbag2 through the STAMP engine with the node's rules "
        "and write the node's outputs into a new bag (no ROS install needed).",
    )
    p.add_argument("input", help="rosbag2 directory (sqlite3 or MCAP), or a .mcap/.db3 file")
    p.add_argument("--image-topic", required=True,
                   help="sensor_msgs/Image or sensor_msgs/CompressedImage topic")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--query", help="continuous mode: this query on every frame")
    which.add_argument("--query-topic",
                       help="once mode: std_msgs/String queries from the bag, each answered on "
                       "the newest frame no older than --max-frame-age (bag time)")
    p.add_argument("--out", required=True, help="output bag directory (must not exist)")
    p.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"],
                   help="output storage (default mcap)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    p.add_argument("--copy-input", action="store_true",
                   help="copy the input topics read (image, queries, depth, camera_info) into "
                   "the output so it plays on its own")
    p.add_argument("--prefix", default="/stamp",
                   help="namespace of the output topics (default /stamp: /stamp/result, ...)")
    p.add_argument("--no-overlay", action="store_true", help="skip the overlay topic")
    p.add_argument("--tf", action="store_true",
                   help="write every object with 3D to /tf as <tf-prefix><id> (the node's "
                   "publish_tf)")
    p.add_argument("--tf-prefix", default=default("tf_prefix"),
                   help="prefix of the TF child frames (default %(default)s)")
    p.add_argument("--video", help="also write the overlays as a video (.mp4, OpenCV mp4v)")
    p.add_argument("--video-fps", type=float,
                   help="video frame rate (default: the bag's frame rate / --every; "
                   f"{QUERY_VIDEO_FPS:g} in --query-topic mode)")
    p.add_argument("--every", type=positive_int, default=1,
                   help="use every N-th frame of the image topic (default 1: all)")
    p.add_argument("--max-frames", type=positive_int, help="stop after N results")
    p.add_argument("--reanswer-every", type=positive_int, default=default("reanswer_every"),
                   help="continuous mode: write the answer afresh every N frames and "
                   "teacher-force it in between (node parameter reanswer_every)")
    p.add_argument("--max-frame-age", type=non_negative, default=default("max_frame_age"),
                   help="once mode: oldest frame (s, bag time) a query may be answered on")
    p.add_argument("--frame-timeout", type=non_negative, default=default("frame_timeout"),
                   help="once mode: bag seconds a query waits for a fresh frame")
    p.add_argument("--depth-topic", help="aligned depth (sensor_msgs/Image 16UC1 or 32FC1)")
    p.add_argument("--camera-info-topic", help="sensor_msgs/CameraInfo of the depth-aligned "
                   "camera; with --depth-topic fills the results' 3D fields")
    p.add_argument("--depth-scale", type=non_negative, default=default("depth_scale"),
                   help="metres per unit of 16UC1 depth")
    p.add_argument("--depth-max-skew", type=non_negative, default=default("depth_max_skew"),
                   help="largest stamp difference (s) between a frame and its depth image")
    track = p.add_argument_group(
        "tracking (--track)", "continuous mode: /stamp/tracks for every frame, the objects of the "
        "query followed by image motion between the model's answers, each with a track_id")
    track.add_argument("--track", action="store_true",
                       help="write /stamp/tracks for every frame (node parameter track); the "
                       "overlay and video then show every frame with track ids")
    when = track.add_mutually_exclusive_group()
    when.add_argument("--model-every", type=positive_int,
                      help="the model answers every N-th frame, instantly (deterministic)")
    when.add_argument("--model-period", type=_model_period, default=None,
                      help="bag seconds each model answer takes (the model takes the newest "
                      "frame when free; frames in between are propagated), or 'real' (the "
                      "default): as long as each answer took on this machine")
    for name in TRACKER_PARAMS:  # the node's track_* parameters, one option each
        track.add_argument(f"--{name.replace('_', '-')}", type=type(default(name)),
                           default=default(name),
                           help=f"node parameter {name}: {BY_NAME[name].description}")
    p.add_argument("--json", action="store_true",
                   help="print one JSON summary object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_model_options(p)
    p.set_defaults(handler=cmd_bag)


@contextmanager
def _stop_on_signals(replayer: Any) -> Iterator[None]:
    """First SIGINT/SIGTERM: ask the replay to stop (the frame in progress is cancelled, the
    outputs are then closed normally). Second SIGINT: KeyboardInterrupt, as without us."""
    count = {"n": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        count["n"] += 1
        replayer.stop_requested = True
        if count["n"] == 1:
            print("\nstamp-ros bag: stopping, closing the output (Ctrl-C again to abort)",
                  file=sys.stderr, flush=True)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        # ValueError off the main thread (embedded use): no handler there, no harm.
        with contextlib.suppress(ValueError):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _video_fps(args: argparse.Namespace, source: Any, replayer: Any) -> float:
    if args.video_fps:
        return float(args.video_fps)
    if not replayer.cfg.continuous:
        return QUERY_VIDEO_FPS
    stamps = source.timestamps(replayer.specs["image"], RATE_SAMPLE)
    if len(stamps) >= 2 and stamps[-1] > stamps[0]:
        rate = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) * 1e-9)
        return max(0.1, min(240.0, rate / args.every))
    return 10.0


def _validate(args: argparse.Namespace) -> None:
    if args.query is not None and not args.query.strip():
        raise InputError("query is empty")
    if args.video and Path(args.video).suffix.lower() not in (".mp4", ".avi", ".mov", ".mkv"):
        raise InputError(f"--video {args.video!r}: use a .mp4 (or .avi/.mov/.mkv) file name")
    if args.video_fps is not None and not (math.isfinite(args.video_fps) and
                                           args.video_fps > 0):
        raise InputError("--video-fps must be > 0")
    if bool(args.depth_topic) != bool(args.camera_info_topic):
        raise InputError("--depth-topic and --camera-info-topic go together (3D needs both)")
    if args.tf_prefix.startswith("/"):
        raise InputError(f"--tf-prefix must not start with '/' (got {args.tf_prefix!r})")
    if Path(args.out).absolute() == Path(args.input).absolute():
        raise InputError("--out must differ from the input bag")
    if args.track and args.query is None:
        raise InputError("--track needs --query (continuous mode)")
    if not args.track and (args.model_every is not None or args.model_period is not None):
        raise InputError("--model-every and --model-period go with --track")
    if args.track:
        from stamp_ros.pipeline.params import TRACKER_PARAMS, validate

        for name in TRACKER_PARAMS:
            reason = validate(name, getattr(args, name))
            if reason:
                raise InputError(f"--{name.replace('_', '-')}: {reason}")


def _track_config(args: argparse.Namespace) -> Any:
    if not args.track:
        return None
    from stamp_ros.bag.tracking import TrackReplayConfig
    from stamp_ros.pipeline.tracking_step import tracker_config

    return TrackReplayConfig(
        model_every=args.model_every, model_period=args.model_period,
        tracker=tracker_config(lambda name: getattr(args, name)))


def cmd_bag(args: argparse.Namespace) -> int:
    try:
        import rosbags  # noqa: F401
    except ImportError:
        raise EngineError("stamp-ros bag needs the rosbags library: pip install "
                          "'stamp-ros[bag]' (or pip install rosbags)") from None
    from stamp_ros.bag.interfaces import RosbagsKit, typestore
    from stamp_ros.bag.progress import Progress
    from stamp_ros.bag.replay import ReplayConfig, Replayer
    from stamp_ros.bag.sink import OutputBag, VideoOut
    from stamp_ros.bag.source import BagReadError, InputBag
    from stamp_ros.engine.options import segmenter_from_args

    _validate(args)
    store = typestore()
    source = InputBag(args.input, store)
    try:
        config = ReplayConfig(
            image_topic=args.image_topic, query=args.query, query_topic=args.query_topic,
            depth_topic=args.depth_topic, camera_info_topic=args.camera_info_topic,
            every=args.every, max_frames=args.max_frames, reanswer_every=args.reanswer_every,
            max_frame_age=args.max_frame_age, frame_timeout=args.frame_timeout,
            depth_scale=args.depth_scale, depth_max_skew=args.depth_max_skew,
            copy_input=args.copy_input, overlay=not args.no_overlay, prefix=args.prefix,
            model=str(args.model), track=_track_config(args), tf=args.tf,
            tf_prefix=args.tf_prefix)
        out = OutputBag(args.out, store, storage=args.storage, overwrite=args.overwrite)
        segmenter: Any = None
        replayer = Replayer(source, segmenter, out, config, kit=RosbagsKit(store))
        if replayer.specs["image"].count == 0:
            raise InputError(f"--image-topic {args.image_topic!r} has no messages")
        video = VideoOut(args.video, _video_fps(args, source, replayer)) if args.video else None
        replayer.video = video
        replayer.segmenter = segmenter_from_args(args)
        progress = Progress(replayer.expected_results(), enabled=not args.quiet)
        replayer.progress = progress
        read_error = ""
        with _stop_on_signals(replayer):
            replayer.open_outputs()
            try:
                summary = replayer.run()
            except BagReadError as exc:
                read_error = str(exc)
                summary = replayer.summary
                summary.topics = dict(out.counts)
            finally:
                progress.finish()
                out.close()
                if video is not None:
                    video.close()
        summary.topics = dict(out.counts)
        summary.video_frames = video.frames if video is not None else 0
        summary.read_error = read_error
        input_storage = source.storage
    finally:
        source.close()
    return _report(args, summary, input_storage)


def _report(args: argparse.Namespace, summary: Any, input_storage: str) -> int:
    data = summary.as_dict()
    data.update(input=str(args.input), input_storage=input_storage, output=str(args.out),
                storage=args.storage,
                video=str(args.video) if args.video else None, model=str(args.model))
    if args.json:
        print(json.dumps(data))
    else:
        video = f", video {args.video} ({summary.video_frames} frames)" if args.video else ""
        stop = (" (interrupted)" if summary.interrupted
                else " (--max-frames reached)" if summary.stopped_at_max_frames else "")
        tracked = f", {summary.tracked_frames} tracked frames" if args.track else ""
        print(f"{summary.results} results ({summary.errors} errors){tracked} from "
              f"{summary.frames_read}/{summary.frames_in_bag} frames in {summary.wall_s:.1f} s "
              f"({summary.fps:.2f} fps){stop} -> {args.out}{video}")
    if summary.read_error:
        print(f"stamp-ros: error: {summary.read_error}; the output holds the "
              f"{summary.results} results before it", file=sys.stderr)
        return EXIT_INPUT
    if summary.interrupted:
        print(f"stamp-ros: interrupted: {args.out} holds the {summary.results} results done",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if summary.results and summary.errors == summary.results:
        print(f"stamp-ros: error: every frame failed, first: {summary.first_error}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
