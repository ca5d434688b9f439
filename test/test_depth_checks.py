"""Depth units, per-object 3D reasons and the valid-depth share (issue 20), without a node.

``check_depth`` and the reason texts are pure; ``lift_frame`` (the 3D step the node and
``stamp-ros bag`` share) runs on real sensor_msgs messages built by the project's converters.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from stamp_ros.diagnosis.depth_units import PLAUSIBLE_M, check_depth, sample
from stamp_ros.spatial import status3d
from stamp_ros.spatial.geometry import MIN_POINTS, valid_depth_fraction

DEPTH = np.full((120, 160), 1500, np.uint16)  # 1.5 m in millimetres


# ------------------------------------------------------------------ units
def test_millimetres_with_the_default_scale_are_fine():
    check = check_depth("16UC1", DEPTH, 0.001)
    assert check.problem is None and check.median_m == pytest.approx(1.5)


def test_16uc1_declared_as_metres_names_the_unit_and_the_parameter():
    check = check_depth("16UC1", DEPTH, 1.0)
    assert check.median_m == pytest.approx(1500.0)
    assert "look like millimetres, not metres" in check.problem
    assert "set depth_scale:=0.001" in check.problem
    assert f"outside {PLAUSIBLE_M[0]:g}-{PLAUSIBLE_M[1]:g} m" in check.problem


def test_a_scale_too_small_is_caught_too():
    check = check_depth("16UC1", DEPTH, 1e-6)
    assert "set depth_scale:=0.001" in check.problem


def test_float_depth_in_millimetres_says_the_parameter_does_not_apply():
    check = check_depth("32FC1", DEPTH.astype(np.float32), 0.001)
    assert "millimetres" in check.problem and "16UC1 only" in check.problem
    assert check_depth("32FC1", np.full((10, 10), 2.0, np.float32), 0.001).problem is None


def test_invalid_pixels_are_ignored_and_empty_images_are_not_a_unit_error():
    holes = DEPTH.copy()
    holes[:, ::2] = 0
    assert check_depth("16UC1", holes, 0.001).median_m == pytest.approx(1.5)
    assert check_depth("16UC1", np.zeros((50, 50), np.uint16), 1.0) == (
        check_depth("16UC1", np.zeros((50, 50), np.uint16), 1.0))
    assert check_depth("16UC1", np.zeros((50, 50), np.uint16), 1.0).problem is None
    nan = np.full((20, 20), np.nan, np.float32)
    assert check_depth("32FC1", nan, 0.001).problem is None


def test_a_colour_image_on_the_depth_topic():
    check = check_depth("rgb8", np.zeros((4, 4, 3), np.uint8), 0.001)
    assert "not a depth image" in check.problem


def test_sampling_reads_a_few_thousand_pixels():
    assert 3000 <= sample(np.zeros((1080, 1920), np.uint16)).size <= 9000
    columns = np.tile(np.arange(640), (480, 1))
    assert len(set(sample(columns).tolist())) > 600  # every column, not a few
    assert sample(np.zeros((10, 10), np.uint16)).size == 100


# ------------------------------------------------------------------ reasons
def test_reason_texts():
    assert status3d.no_depth().text == "no depth received"
    assert status3d.depth_skew(0.18, 0.05).text == \
        "depth 180 ms from the colour frame (depth_max_skew 50 ms)"
    assert status3d.depth_skew(12.5, 0.05).text.startswith("depth 12.5 s")
    assert status3d.few_points(3, 10).text == "3 valid points < 10"
    kinds = {status3d.no_depth().kind, status3d.few_points(1, 2).kind,
             status3d.tf_unavailable("map").kind}
    assert kinds <= set(status3d.KINDS)


@pytest.mark.parametrize(("exc", "message", "text"), [
    ("LookupException", '"base_link" passed to lookupTransform argument target_frame does '
     "not exist. ", "tf: frame 'base_link' does not exist"),
    ("LookupException", '"cam" passed to lookupTransform argument source_frame does not exist.',
     "tf: frame 'cam' does not exist"),
    ("ConnectivityException", "Could not find a connection between 'base_link' and 'cam' "
     "because they are not part of the same tree.", "tf: no connection between 'base_link' and "
     "'cam' (separate tf trees)"),
    ("ExtrapolationException", "Lookup would require extrapolation into the future.",
     "tf: no transform 'cam' -> 'base_link' at the frame's stamp (extrapolation: tf too old or "
     "too new)"),
    ("TimeoutException", "", "tf: TimeoutException"),
])
def test_tf_failures_become_one_line(exc, message, text):
    assert status3d.tf_failure(exc, message, "cam", "base_link").text == text


# ------------------------------------------------------------------ valid depth share
def test_valid_depth_fraction_counts_usable_pixels_on_the_depth_grid():
    depth = np.full((10, 10), 1.0, np.float32)
    depth[:, :5] = np.nan
    mask = np.zeros((20, 20), bool)  # colour resolution: twice the depth grid
    mask[:, 4:16] = True  # depth columns 2-7: half of them NaN
    assert valid_depth_fraction(mask, depth) == pytest.approx(0.5)
    assert valid_depth_fraction(np.zeros((10, 10), bool), depth) == 0.0
    assert valid_depth_fraction(np.ones((10, 10), bool), np.full((10, 10), 50.0)) == 0.0


# ------------------------------------------------------------------ lift_frame
def _msgs():
    pytest.importorskip("sensor_msgs.msg")
    from sensor_msgs.msg import CameraInfo

    from stamp_ros.testing.images import array_to_image_msg

    def depth_at(sec: int, nanosec: int, value=DEPTH, encoding="16UC1"):
        msg = array_to_image_msg(value, encoding)
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        return msg

    info = CameraInfo(width=160, height=120)
    info.k = [100.0, 0.0, 80.0, 0.0, 100.0, 60.0, 0.0, 0.0, 1.0]
    return depth_at, info


def _header(sec: int, nanosec: int = 0):
    return SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec), frame_id="cam")


def test_lift_frame_reasons_per_object():
    from stamp_ros.spatial.depth3d import lift_frame

    depth_at, info = _msgs()
    square = np.zeros((120, 160), bool)
    square[30:60, 40:80] = True
    tiny = np.zeros((120, 160), bool)
    tiny[5, 5] = True
    masks = [square, tiny, np.zeros((120, 160), bool)]
    kwargs = dict(depth_max_skew=0.05, depth_scale=0.001)

    none = lift_frame(_header(50), masks, [], info, **kwargs)
    assert [r.text for r in none.reasons] == ["no depth received"] * 3
    no_info = lift_frame(_header(50), masks, [depth_at(50, 0)], None, **kwargs)
    assert no_info.reasons[0].kind == "no_camera_info"
    skewed = lift_frame(_header(50, 200_000_000), masks, [depth_at(50, 0)], info, **kwargs)
    assert skewed.reasons[0].text == "depth 200 ms from the colour frame (depth_max_skew 50 ms)"
    assert not skewed.any_3d

    lift = lift_frame(_header(50, 30_000_000), masks, [depth_at(50, 0)], info, **kwargs)
    assert lift.frame_id == "cam" and lift.reasons[0] is None
    assert lift.objects[0].centroid[2] == pytest.approx(1.5)
    assert lift.fractions[0] == pytest.approx(1.0)
    assert lift.reasons[1].text == f"0 valid points < {MIN_POINTS}" or \
        lift.reasons[1].text == f"1 valid points < {MIN_POINTS}"
    assert lift.reasons[2].kind == "empty_mask"

    metres = lift_frame(_header(50), masks, [depth_at(50, 0)], info, depth_max_skew=0.05,
                        depth_scale=1.0)  # 1500 m: nothing usable
    assert metres.fractions[0] == 0.0 and metres.reasons[0].kind == "few_points"

    lift.withhold(status3d.tf_unavailable("base_link"))
    assert not lift.any_3d and lift.reasons[0].kind == "tf"
    assert lift.reasons[2].kind == "empty_mask"  # its own reason stays
