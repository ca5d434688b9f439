"""The protocol's metrics on masks small enough to count by hand, and the pieces around them
(sharding, prompts, the published-number lookup, settings of --paper)."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from stamp_ros.eval.distributed import shard
from stamp_ros.eval.metrics import SplitScore, intersection_union, sample_iou, score
from stamp_ros.eval.prompts import TEMPLATES, build_prompt, template_index
from stamp_ros.eval.published import model_family, published


def official_iu(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The official intersectionAndUnionGPU (torch.histc, 2 classes, ignore 255), restated
    from its description, class 1."""
    output = torch.from_numpy(pred.astype(np.float64)).reshape(-1).clone()
    target = torch.from_numpy(truth.astype(np.float64)).reshape(-1)
    output[target == 255] = 255
    inter = output[output == target]
    a_i = torch.histc(inter, bins=2, min=0, max=1)
    a_o = torch.histc(output, bins=2, min=0, max=1)
    a_t = torch.histc(target, bins=2, min=0, max=1)
    return float(a_i[1]), float((a_o + a_t - a_i)[1])


# --------------------------------------------------------------------------- by hand


def test_intersection_and_union_counted_by_hand():
    pred = np.array([[1, 1, 0, 0],
                     [1, 1, 0, 0],
                     [0, 0, 0, 1]], np.uint8)
    truth = np.array([[0, 1, 1, 0],
                      [0, 1, 1, 0],
                      [0, 0, 0, 0]], np.uint8)
    # I: (0,1), (1,1) = 2; |pred| = 5, |truth| = 4; U = 5 + 4 - 2 = 7
    assert intersection_union(pred, truth) == (2, 7)
    assert sample_iou(2, 7) == pytest.approx(2 / 7, abs=1e-5)
    assert sample_iou(2, 7) == 2 / (7 + 1e-5)


def test_overlapping_polygons_value_two_counts_only_in_the_union():
    # RefCOCO ground truth sums an annotation's polygons: where two overlap the value is 2.
    truth = np.array([[1, 1, 2, 2],
                      [0, 1, 2, 0]], np.uint8)
    pred = np.array([[1, 0, 1, 1],
                     [0, 1, 1, 0]], np.uint8)
    # truth == 1: 3 pixels; pred == 1: 5; I: (0,0), (1,1) = 2; the three predicted 1s on 2s
    # are in U (through |pred|) and in no other count: U = 5 + 3 - 2 = 6.
    assert intersection_union(pred, truth) == (2, 6)
    assert official_iu(pred, truth) == (2.0, 6.0)
    # A prediction only on the overlap pixels: no intersection, union = those pixels + truth 1s.
    only2 = (truth == 2).astype(np.uint8)
    assert intersection_union(only2, truth) == (0, 3 + 3)


def test_empty_union_scores_one_and_adds_nothing_to_ciou():
    empty = np.zeros((3, 3), np.uint8)
    s = score(empty, empty)
    assert (s.inter, s.union, s.iou) == (0, 0, 1.0)
    assert s.pred_empty and s.truth_empty
    total = SplitScore()
    total.add(s)
    hit = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]], np.uint8)
    truth = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 0]], np.uint8)
    total.add(score(hit, truth))  # I = 1, U = 2
    assert total.result()["intersection"] == 1 and total.result()["union"] == 2
    assert total.ciou == 1 / (2 + 1e-5)
    assert total.giou == (1.0 + 1 / (2 + 1e-5)) / 2
    # a false alarm on an empty truth: U = 2, IoU 0
    total.add(score(hit, empty))
    assert total.giou == pytest.approx((1.0 + 0.5 + 0.0) / 3, abs=1e-5)
    assert total.ciou == 1 / (4 + 1e-5)


def test_ignore_index_leaves_both_counts():
    truth = np.array([[1, 255], [0, 1]], np.uint8)
    pred = np.array([[1, 1], [1, 0]], np.uint8)
    assert intersection_union(pred, truth) == (1, 3)
    assert official_iu(pred, truth) == (1.0, 3.0)


def test_random_masks_match_the_official_histc_computation():
    rng = np.random.default_rng(11)
    for _ in range(200):
        h, w = rng.integers(1, 40, size=2)
        truth = rng.choice([0, 1, 2], size=(h, w), p=[0.5, 0.4, 0.1]).astype(np.uint8)
        pred = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        assert intersection_union(pred, truth) == tuple(int(v) for v in official_iu(pred, truth))


def test_giou_and_ciou_do_not_depend_on_sample_order():
    rng = np.random.default_rng(2)
    scores = []
    for _ in range(300):
        truth = (rng.random((9, 9)) < 0.3).astype(np.uint8)
        pred = (rng.random((9, 9)) < 0.3).astype(np.uint8)
        scores.append(score(pred, truth))
    a, b = SplitScore(), SplitScore()
    for s in scores:
        a.add(s)
    for i in rng.permutation(len(scores)):
        b.add(scores[i])
    assert a.result() == b.result()  # bit for bit, not approximately
    assert a.giou == math.fsum(s.iou for s in scores) / len(scores)


def test_no_target_and_target_accuracy():
    empty = np.zeros((2, 2), np.uint8)
    full = np.ones((2, 2), np.uint8)
    total = SplitScore()
    for pred, truth in [(empty, empty), (full, empty), (full, full), (empty, full),
                        (full, full)]:
        total.add(score(pred, truth))
    r = total.target_result()
    assert r == {"no_target_samples": 2, "no_target_accuracy": 0.5,
                 "target_samples": 3, "target_accuracy": 2 / 3}


# --------------------------------------------------------------------------- around the metrics


def test_shards_partition_the_samples_in_whole_images():
    rng = np.random.default_rng(0)
    for world in (1, 2, 3, 8):
        sizes = rng.integers(1, 6, size=40)
        groups = [f"img{g}" for g, n in enumerate(sizes) for _ in range(n)]
        items = list(range(len(groups)))
        shards = [shard(items, groups, r, world) for r in range(world)]
        assert sorted(i for s in shards for i in s) == items  # each exactly once
        for s in shards:
            assert s == sorted(s)  # contiguous runs, in order
            imgs = {groups[i] for i in s}
            assert all(groups.count(g) == sum(groups[i] == g for i in s) for g in imgs)
        counts = [len(s) for s in shards]
        assert max(counts) - min(counts) <= 2 * max(sizes)


def test_template_prompts_are_seeded_per_sample():
    key = "refcoco/val/r1s1000"
    assert build_prompt("the cat", "sentence", 0, key) == "the cat"
    first = build_prompt("the cat", "template", 0, key)
    assert first == build_prompt("the cat", "template", 0, key)
    assert first in [t.replace("[class_name]", "the cat") for t in TEMPLATES]
    chosen = {template_index(0, f"refcoco/val/r{i}s{i}") for i in range(200)}
    assert chosen == set(range(len(TEMPLATES)))  # every template is used
    seeds = {template_index(s, key) for s in range(50)}
    assert len(seeds) > 1  # the seed changes the choice
    with pytest.raises(ValueError):
        build_prompt("x", "free", 0, key)


def test_published_numbers_and_model_family():
    assert model_family("JiaZL/STAMP-2B-uni") == "STAMP-2B"
    assert model_family("/data/stamp-7b-lora") == "STAMP-7B"
    assert model_family("/tmp/ckpt") is None
    assert published("STAMP-2B", "grid", "refcoco", "val") == {"ciou": 77.7}
    assert published("STAMP-7B", "sam", "refcocog", "test") == {"ciou": 80.4}
    assert published("STAMP-2B", "grid", "grefcoco", "testB") == {"giou": 67.5, "ciou": 68.1}
    assert published(None, "grid", "refcoco", "val") == {}


def test_paper_flag_sets_the_official_settings_and_explicit_options_win():
    from stamp_ros.cli.main import build_parser
    from stamp_ros.eval.command import _resolve_settings

    def resolved(*argv: str) -> argparse.Namespace:
        args = build_parser().parse_args(["eval", "--dataset", "refcoco", *argv])
        _resolve_settings(args)
        return args

    paper = resolved("--paper")
    assert (paper.min_pixels, paper.max_pixels) == (802816, 802816)
    assert (paper.max_new_tokens, paper.prompt) == (1024, "template")
    mixed = resolved("--paper", "--max-pixels", "1003520", "--prompt", "sentence")
    assert (mixed.min_pixels, mixed.max_pixels, mixed.prompt) == (802816, 1003520, "sentence")
    plain = resolved()
    assert plain.prompt == "sentence" and plain.min_pixels < plain.max_pixels


def test_progress_line_shows_eta_running_ciou_and_resumed_samples():
    import io

    from stamp_ros.eval.progress import EvalProgress

    stream = io.StringIO()
    progress = EvalProgress(10, stream=stream, interval=0.0)
    progress.update(4, 2, 1, 0.5, "refcoco/val", force=True)
    line = stream.getvalue().strip()
    assert line.startswith("eval refcoco/val: 4/10 samples (2 resumed)")
    for part in ("s/sample", "cIoU 50.00", "1 bad", "ETA ", "elapsed "):
        assert part in line, line
    stream.truncate(0)
    progress.update(10, 8, 1, 0.5, "refcoco/val", force=True)
    assert "ETA" not in stream.getvalue()  # finished: nothing left to estimate
