"""Every node parameter in one table: default, type, description, limits, and whether a change
needs the model reloaded.

The node declares them from this table; the table in docs/parameters.md and config/stamp.yaml
are generated from it (scripts/render_params.py) and checked against it by the tests, so the
documented interface cannot drift from the code. The engine's defaults (model, pixel range,
answer length, system prompt) are taken from the torch-free ``stamp_ros.engine.defaults`` /
``engine.prompt``, so the node and the CLI start from the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from stamp_ros.engine.defaults import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    DEFAULT_MODEL,
)
from stamp_ros.engine.prompt import DEFAULT_SYSTEM_PROMPT


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    choices: tuple[Any, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    reload: bool = False
    """True: the value is read when the node configures/activates; changing it while the node
    is active is refused with a reason (deactivate, set, activate)."""


PARAMS: tuple[Param, ...] = (
    Param("model", DEFAULT_MODEL, "STAMP checkpoint: hub id or local directory (full model or "
          "PEFT LoRA adapter such as JiaZL/STAMP-7B-lora)", reload=True),
    Param("device", "auto", "where the model runs: auto (cuda when available), cuda, cuda:N, cpu",
          reload=True),
    Param("devices", [""], "one inference process per entry, each with its own copy of the "
          "model (e.g. [\"cuda:0\", \"cuda:1\"]); requests go to the least busy one, each "
          "continuous camera to one; \"\" = device", reload=True),
    Param("inference_threads", 0, "CPU threads of each inference process; 0 = all cores but "
          "one (shared by the processes) so that the node's intake keeps a core", min_value=0,
          max_value=1024, reload=True),
    Param("inference_nice", 10, "scheduling niceness of the inference processes (0-19): "
          "when the cores are contended the node's camera intake goes first and the model "
          "takes what is left; 0 = equal priority", min_value=0, max_value=19, reload=True),
    Param("dtype", "auto", "model dtype: auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32",
          choices=("auto", "bf16", "fp16", "fp32"), reload=True),
    Param("min_pixels", DEFAULT_MIN_PIXELS, "smallest resized image area (Qwen2-VL processor)",
          min_value=28 * 28, reload=True),
    Param("max_pixels", DEFAULT_MAX_PIXELS, "largest resized image area (Qwen2-VL processor)",
          min_value=28 * 28, reload=True),
    Param("max_new_tokens", DEFAULT_MAX_NEW_TOKENS, "longest answer the model may write",
          min_value=1, max_value=4096),
    Param("mask_upsample", "nearest", "grid to full resolution: nearest (as the reference "
          "code) or bilinear (smooth: bilinear logits thresholded at 0)",
          choices=("nearest", "bilinear")),
    Param("refine", "none", "mask refinement: none, or sam (needs segment-anything and "
          "sam_checkpoint)", choices=("none", "sam"), reload=True),
    Param("sam_checkpoint", "", "path of the SAM ViT-H checkpoint when refine is sam",
          reload=True),
    Param("mode", "once", "once: each query answers once on a fresh frame; continuous: the "
          "last query runs on every new frame, dropping frames while busy",
          choices=("once", "continuous")),
    Param("reanswer_every", 30, "continuous mode: regenerate the answer every N frames and "
          "reuse (teacher-force) it in between; 1 = always generate", min_value=1),
    Param("track", False, "continuous mode: follow every object of the query between model "
          "answers: ~/tracks on every camera frame (masks carried by image motion), track_id "
          "on ~/result; a lost track or a scene change asks for a freshly written answer"),
    Param("track_min_iou", 0.3, "tracking: smallest mask IoU for a model answer's object to "
          "continue a track (else it gets a new id)", min_value=0.01, max_value=1.0),
    Param("track_max_misses", 2, "tracking: a track not matched by this many model answers in "
          "a row ends", min_value=1, max_value=1000),
    Param("track_max_side", 480, "tracking: longer side (px, at most) of the grey image motion "
          "is estimated on (frames are downscaled by an integer factor)", min_value=64,
          max_value=4096),
    Param("track_fb_threshold", 1.0, "tracking: forward-backward error (px of that image) above "
          "which a tracked point is not trusted", min_value=0.05, max_value=20.0),
    Param("track_scene_change", 0.7, "tracking: fraction of the whole image's tracked points "
          "failing at once that counts as a scene change (every track lost, fresh answer)",
          min_value=0.05, max_value=1.0),
    Param("track_memory", 10.0, "tracking: seconds an object that is no longer seen (hidden, out "
          "of view, missed by the model) is remembered; a later answer's object that looks like "
          "it, where its motion allows, takes its id back (0 = forget at once)", min_value=0.0,
          max_value=3600.0),
    Param("track_reid_threshold", 0.45, "tracking: appearance similarity (0-1; colour histogram "
          "and verified keypoints) an object needs to take a remembered track's id",
          min_value=0.0, max_value=1.0),
    Param("track_max_prediction", 3.0, "tracking: seconds a hidden object's position is "
          "predicted by its motion (and gates its re-identification); after that only its "
          "appearance counts", min_value=0.0, max_value=60.0),
    Param("max_frame_age", 1.0, "seconds: the oldest frame a query may be answered on "
          "(age since the node received it)", min_value=0.0),
    Param("frame_timeout", 2.0, "seconds a query waits for a fresh frame before an error "
          "result", min_value=0.0),
    Param("max_pending", 4, "requests that may wait for the model; more are answered with an "
          "error result", min_value=1, max_value=1000, reload=True),
    Param("inference_stall_timeout", 120.0, "seconds an inference process may stay silent "
          "while it loads, warms up or owes an answer (it reports every stage, at least every "
          "second while decoding, and every second a load makes progress) before it is killed "
          "(a hung load fails activate; a hung warm-up or request restarts it and its requests "
          "get an error result; 0 = never); keep it above the longest single forward pass",
          min_value=0.0),
    Param("free_on_deactivate", True, "deactivate ends the inference processes, returning "
          "all their memory (GPU included); false keeps the model loaded for a fast activate"),
    Param("cameras", [""], "camera names served by this one model; \"\" = one camera on "
          "image/query/depth/camera_info with outputs ~/result...; [\"front\", \"wrist\"] = "
          "front/image, front/query, ... -> ~/front/result, ...", reload=True),
    Param("use_compressed", False, "subscribe to image/compressed (CompressedImage) instead of "
          "image", reload=True),
    Param("image_reliability", "best_effort", "QoS reliability of the camera subscriptions "
          "(image, depth, camera_info): best_effort matches every camera driver; reliable "
          "receives nothing from a best-effort one",
          choices=("reliable", "best_effort"), reload=True),
    Param("publish_overlay", True, "publish ~/overlay (only built while someone subscribes)"),
    Param("system_prompt", DEFAULT_SYSTEM_PROMPT, "system message of the chat"),
    Param("depth_scale", 0.001, "metres per raw unit of 16UC1 depth images (32FC1 is metres)",
          min_value=0.0),
    Param("depth_max_skew", 0.05, "seconds: largest stamp difference between a colour frame "
          "and the depth image paired with it", min_value=0.0),
    Param("target_frame", "", "TF frame for 3D outputs; empty = the camera optical frame"),
    Param("publish_tf", False, "publish every object with 3D on /tf: <tf_prefix><id> in its "
          "frame_id_3d at the centroid, identity rotation, the frame's stamp (id: the track id "
          "while tracking, else <request_id>_<index>)"),
    Param("tf_prefix", "stamp/", "prefix of the TF child frames publish_tf creates"),
    Param("conversation_max_turns", 8, "multi-round conversations: earlier turns kept in the "
          "prompt (older ones drop out of it)", min_value=0, max_value=64),
    Param("max_conversations", 16, "conversations kept at once (each holds its frame); a new "
          "one evicts the least recently used", min_value=1, max_value=1000),
    Param("conversation_timeout", 300.0, "seconds: a conversation unused this long is "
          "forgotten", min_value=1.0),
    Param("input_timeout", 5.0, "seconds: after activation, a camera input (image; depth and "
          "camera_info when configured) silent this long is reported in the log (once per "
          "interval, with the likely cause) and on /diagnostics (0 = off)", min_value=0.0),
    Param("stats_period", 30.0, "seconds between ~/stats log lines and /diagnostics updates "
          "(0 = off)", min_value=0.0),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}

LIVE_PROCESS_SETTINGS: dict[str, str] = {
    "system_prompt": "system_prompt", "max_new_tokens": "max_new_tokens",
    "mask_upsample": "mask_upsample", "inference_stall_timeout": "stall_timeout",
}
"""Parameters the inference processes take while loaded: name -> ``InferenceProcess``
attribute (the node sets them on every process, now and on each change)."""

DEVICE_RE = re.compile(r"^(|auto|cpu|cuda(:\d+)?)$")
"""An entry of ``devices``: "" (the ``device`` parameter), auto, cpu, cuda or cuda:N."""


TRACKER_PARAMS = {
    "track_min_iou": "min_iou",
    "track_max_misses": "max_misses",
    "track_max_side": "max_side",
    "track_fb_threshold": "fb_threshold",
    "track_scene_change": "scene_change",
    "track_memory": "memory",
    "track_reid_threshold": "reid_threshold",
    "track_max_prediction": "max_prediction",
}
"""Node parameter (and ``stamp-ros bag`` option) -> :class:`~stamp_ros.tracking.TrackerConfig`
field: the tracker's tunable part, named once for both."""


def validate(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None when it is."""
    spec = BY_NAME.get(name)
    if spec is None:
        return None
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(map(str, spec.choices))}, got {value!r}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.min_value is not None and value < spec.min_value:
            return f"{name} must be >= {spec.min_value:g}, got {value}"
        if spec.max_value is not None and value > spec.max_value:
            return f"{name} must be <= {spec.max_value:g}, got {value}"
    if name == "tf_prefix" and str(value).startswith("/"):
        return f"tf_prefix must not start with '/' (tf2 frame ids never do), got {value!r}"
    if name == "model" and not str(value).strip():
        return "model must name a hub id or a local directory"
    if name == "devices":
        bad = [d for d in value if not DEVICE_RE.match(str(d).strip())]
        if bad or not len(value):
            return ("devices must list one or more of \"\" (= device), auto, cpu, cuda, "
                    f"cuda:N; got {list(value)!r}")
    return None
