"""The datasets ``stamp-ros eval`` reads: RefCOCO and gRefCOCO in the official layout (written
here: pickled refs, COCO instances with polygons and RLE, multi-object and no-target grefs),
robot JSONL labels and bag + labels. Ground truth is compared with what the official loaders
compute with pycocotools."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from eval_data import (
    GREFS,
    IMAGE_DIR,
    IMAGES,
    annotations,
    file_name,
    official_grefcoco_truth,
    official_refcoco_truth,
    rle_of,
    write_camera_bag,
    write_refer_root,
)
from PIL import Image

from stamp_ros.eval.labels import load_jsonl_split
from stamp_ros.eval.refer import load_benchmark_splits
from stamp_ros.eval.samples import DataError
from stamp_ros.testing.images import sample_image

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_refer_root(tmp_path_factory.mktemp("refer") / "data")


def _by_id(split):
    return {s.id: s for s in split.samples}


def test_refcoco_samples_follow_the_official_split_rules(root):
    val, test_a, test_b = load_benchmark_splits(root, "refcoco", ["val", "testA", "testB"])
    # val: ref 1 (2 sentences), ref 2, ref 6 (missing annotation: still listed, as a problem)
    assert [s.id for s in val.samples] == ["r1s1000", "r1s1001", "r2s1002", "r6s1007"]
    # testA takes every split naming A (REFER.getRefIds): ref 3 and the "testAB" ref 5
    assert [s.meta["ref_id"] for s in test_a.samples] == [3, 3, 5]
    assert [s.meta["ref_id"] for s in test_b.samples] == [4, 5]
    texts = [s.text for s in val.samples]
    assert texts[:2] == ["the left horse", "horse on the left"]  # stripped, lower-cased
    assert val.samples[3].problem == "annotation 999 is not in instances.json"
    assert val.samples[0].group == val.samples[2].group == "1"  # one image, run together
    assert val.samples[0].source.endswith(str(IMAGE_DIR / file_name(1)))
    with pytest.raises(DataError, match="has splits val, testA, testB"):
        load_benchmark_splits(root, "refcoco", ["test"])


def test_refcoco_ground_truth_is_the_official_one(root):
    anns = {a["id"]: a for a in annotations()}
    splits = load_benchmark_splits(root, "refcoco", ["val", "testA", "testB"])
    seen_two = False
    for split in splits:
        for s in split.samples:
            if s.problem:
                continue
            h, w, _ = IMAGES[s.meta["image_id"]]
            truth = s.truth((h, w))
            expected = official_refcoco_truth(anns[s.meta["ann_id"]], h, w)
            np.testing.assert_array_equal(truth, expected)
            seen_two |= bool((truth == 2).any())
            assert s.image().shape == (h, w, 3)
    assert seen_two  # ann 102's overlapping polygons keep their value 2


def test_grefcoco_multi_object_no_target_and_the_split_quirk(root):
    val, test_a, test_b = load_benchmark_splits(root, "grefcoco", ["val", "testA", "testB"])
    anns = {a["id"]: a for a in annotations()}
    # every ref of a val image counts, the train ref 15 on image 1 included (official quirk)
    assert [s.meta["ref_id"] for s in val.samples] == [11, 12, 15]
    assert val.notes["refs_from_other_splits"] == 1
    assert val.notes["no_target_refs"] == 1
    assert [s.text for s in test_b.samples] == ["quad shape", "the quad"]  # as given
    assert test_a.notes["rle_annotations"] == 1
    grefs = {ref_id: ids for ref_id, _img, ids, _split, _s in GREFS}
    for split in (val, test_a, test_b):
        for s in split.samples:
            h, w, _ = IMAGES[s.meta["image_id"]]
            ids = grefs[s.meta["ref_id"]]
            expected = official_grefcoco_truth([anns.get(a) for a in ids], h, w)
            truth = s.truth((h, w))
            np.testing.assert_array_equal(truth, expected)
            assert truth.max() <= 1  # union clipped to 1
    multi = val.samples[0].truth(IMAGES[1][:2])
    one = official_refcoco_truth(anns[101], *IMAGES[1][:2])
    assert multi.sum() > (one > 0).sum()  # two objects
    assert val.samples[1].truth(IMAGES[1][:2]).sum() == 0  # no target
    assert val.samples[1].meta["no_target"]


def test_refs_pickle_that_carries_code_is_refused(tmp_path, root):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(root / "refcoco", data / "refcoco")
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with open(data / "refcoco" / "refs(unc).p", "wb") as f:
        pickle.dump([{"ref_id": 1, "x": Evil()}], f)
    with pytest.raises(DataError, match="only plain data"):
        load_benchmark_splits(data, "refcoco", ["val"])
    assert not marker.exists()


def test_missing_data_root_and_broken_instances(tmp_path, root):
    with pytest.raises(DataError, match=r"refcoco\+ not found"):
        load_benchmark_splits(tmp_path, "refcoco+", ["val"])
    import shutil

    data = tmp_path / "d"
    shutil.copytree(root / "refcoco", data / "refcoco")
    (data / "refcoco" / "instances.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_benchmark_splits(data, "refcoco", ["val"])


# --------------------------------------------------------------------------- JSONL


def write_jsonl_dataset(folder: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Images and labels in every ground-truth form, plus broken lines; the expected truths."""
    (folder / "frames").mkdir(parents=True)
    (folder / "masks").mkdir()
    h, w = 60, 80
    expected: dict[str, np.ndarray] = {}
    lines: list[str] = []
    for k in range(4):
        Image.fromarray(sample_image(20 + k, h, w)).save(folder / "frames" / f"{k}.png")
    png = np.zeros((h, w), np.uint8)
    png[10:30, 20:50] = 255
    Image.fromarray(png).save(folder / "masks" / "0.png")
    expected["png"] = (png > 0).astype(np.uint8)
    lines.append(json.dumps({"id": "png", "image": "frames/0.png", "query": "the box",
                             "mask": "masks/0.png"}))
    disc = np.zeros((h, w), np.uint8)
    disc[np.hypot(*np.mgrid[0:h, 0:w] - np.array([30, 40])[:, None, None]) < 12] = 1
    expected["rle"] = disc
    lines.append(json.dumps({"id": "rle", "image": "frames/1.png", "sentence": "the disc",
                             "segmentation": rle_of(disc)}))
    counts_rle = {"size": [h, w], "counts": [h * 5, h * 10, h * (w - 15)]}
    band = np.zeros((h, w), np.uint8)
    band[:, 5:15] = 1
    expected["counts"] = band
    lines.append(json.dumps({"id": "counts", "image": "frames/1.png", "query": "the band",
                             "segmentation": counts_rle}))
    polys = [[5.0, 5.0, 30.0, 5.0, 30.0, 30.0, 5.0, 30.0], [20.0, 20.0, 60.0, 20.0, 40.0, 55.0]]
    from pycocotools import mask as cm

    expected["polys"] = (np.sum(cm.decode(cm.frPyObjects(polys, h, w)), axis=2) > 0).astype(
        np.uint8)
    lines.append(json.dumps({"id": "polys", "image": "frames/2.png", "query": "two things",
                             "segmentation": polys}))
    expected["none"] = np.zeros((h, w), np.uint8)
    lines.append(json.dumps({"id": "none", "image": "frames/3.png", "query": "a unicorn",
                             "mask": None}))
    lines.append("{this is not json")
    lines.append(json.dumps({"id": "nogt", "image": "frames/3.png", "query": "what?"}))
    lines.append(json.dumps({"id": "png", "image": "frames/3.png", "query": "dup",
                             "mask": None}))
    lines.append("")
    path = folder / "labels.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, expected


def test_jsonl_labels_in_every_form(tmp_path):
    path, expected = write_jsonl_dataset(tmp_path / "own")
    split = load_jsonl_split(path)
    assert (split.dataset, split.split) == ("jsonl", "labels")
    samples = _by_id(split)
    for sid, truth in expected.items():
        s = samples[sid]
        assert not s.problem, (sid, s.problem)
        image = s.image()
        np.testing.assert_array_equal(s.truth(image.shape[:2]), truth)
    assert samples["rle"].text == "the disc"  # "sentence" is accepted for "query"
    assert "not valid JSON" in samples["line6"].problem
    assert "no ground truth" in samples["nogt"].problem
    assert "duplicate id 'png'" in samples["png#line8"].problem
    assert len(split.samples) == 8


def test_jsonl_bad_files_fail_at_load(tmp_path):
    (tmp_path / "labels.jsonl").write_text(json.dumps(
        {"image": "missing.png", "query": "q", "segmentation": {"size": [2, 2], "counts": "x"}}))
    s = load_jsonl_split(tmp_path / "labels.jsonl").samples[0]
    assert s.problem == ""
    with pytest.raises(DataError, match="cannot read image"):
        s.image()
    with pytest.raises(DataError, match="undecodable segmentation"):
        s.truth((2, 2))


# --------------------------------------------------------------------------- bags


@pytest.mark.parametrize("compressed", [False, True])
def test_bag_labels_find_their_frames_by_header_stamp(tmp_path, compressed):
    pytest.importorskip("rosbags")
    from stamp_ros.eval.bag_data import load_bag_split

    frames = [sample_image(30 + k, 48, 64) for k in range(5)]
    t0 = 1_700_000_000 * 10**9
    stamps = [t0 + k * 100_000_000 + 123 for k in range(5)]
    bag = write_camera_bag(tmp_path / "run", frames, stamps, compressed)
    mask = np.zeros((48, 64), np.uint8)
    mask[5:20, 10:40] = 1
    labels = [
        {"id": "ns", "stamp": stamps[1], "query": "a", "segmentation": rle_of(mask)},
        {"id": "secnsec", "stamp": {"sec": stamps[3] // 10**9, "nanosec": stamps[3] % 10**9},
         "query": "b", "mask": None},
        {"id": "float", "stamp": stamps[4] / 1e9, "query": "c", "mask": None},
        {"id": "nomatch", "stamp": stamps[2] + 50_000, "query": "d", "mask": None},
        {"id": "badstamp", "stamp": "soon", "query": "e", "mask": None},
    ]
    lpath = tmp_path / "labels.jsonl"
    lpath.write_text("\n".join(json.dumps(x) for x in labels))
    topic = "/cam/image/compressed" if compressed else "/cam/image"
    split, source = load_bag_split(bag, lpath, topic)
    try:
        s = _by_id(split)
        assert split.notes == {"frames_on_topic": 5, "labels": 5, "unmatched": 1}
        np.testing.assert_array_equal(s["ns"].image(), frames[1])
        np.testing.assert_array_equal(s["ns"].truth((48, 64)), mask)
        np.testing.assert_array_equal(s["secnsec"].image(), frames[3])
        np.testing.assert_array_equal(s["float"].image(), frames[4])  # float seconds, rounded
        assert s["float"].group == f"stamp{stamps[4]}"
        assert "no frame on" in s["nomatch"].problem
        assert "bad or missing 'stamp'" in s["badstamp"].problem
    finally:
        source.close()


def test_annotations_the_official_loader_crashes_on_are_decoded_and_counted(tmp_path, root):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(root / "refcoco", data / "refcoco")
    instances = json.loads((data / "refcoco" / "instances.json").read_text())
    h, w, _ = IMAGES[1]
    box = np.zeros((h, w), np.uint8)
    box[10:30, 5:50] = 1
    flat = box.T.reshape(-1)
    edges = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()  # starts with zeros
    for ann in instances["annotations"]:
        if ann["id"] == 101:
            ann["segmentation"] = {"size": [h, w], "counts": counts}  # bare dict, raw counts
    (data / "refcoco" / "instances.json").write_text(json.dumps(instances))
    (val,) = load_benchmark_splits(data, "refcoco", ["val"])
    assert val.notes["official_loader_fails"] == 2  # ref 1's two sentences
    np.testing.assert_array_equal(val.samples[0].truth((h, w)), box)
