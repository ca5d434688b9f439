"""Tiny datasets in the official layouts, written by the tests themselves (helpers for the tests).

``write_refer_root`` lays out ``DATA_ROOT`` exactly as the official STAMP / LISA scripts read it:
``refcoco/refs(unc).p`` (a pickled list of refs), ``refcoco/instances.json`` (COCO images and
annotations, polygons and RLE), ``grefcoco/grefs(unc).json`` (multi-object and no-target refs)
and the images under ``images/coco_2014/train2014/``. What each ref exercises is listed in
:data:`REFS` and :data:`GREFS`; the tests decode the ground truth with pycocotools as the
official loaders do and compare.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from stamp_ros.testing.images import sample_image

IMAGE_DIR = Path("images") / "coco_2014" / "train2014"
# image id -> (height, width, seed)
IMAGES = {1: (96, 128, 3), 2: (80, 112, 5), 3: (104, 104, 7)}


def file_name(image_id: int) -> str:
    return f"COCO_train2014_{image_id:012d}.jpg"


def rle_of(mask: np.ndarray) -> dict:
    """A compressed COCO RLE (str counts) made by pycocotools."""
    from pycocotools import mask as cm

    rle = cm.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def annotations() -> list[dict]:
    h2, w2, _ = IMAGES[2]
    return [
        # one polygon
        {"id": 101, "image_id": 1, "category_id": 1, "iscrowd": 0,
         "segmentation": [[4.5, 6.0, 30.2, 4.0, 34.0, 30.5, 10.0, 40.7, 3.0, 22.0]]},
        # two overlapping polygons: pixels in both are 2 in the official ground truth
        {"id": 102, "image_id": 1, "category_id": 1, "iscrowd": 0,
         "segmentation": [[30.0, 10.0, 60.0, 10.0, 60.0, 40.0, 30.0, 40.0],
                          [40.0, 2.0, 63.0, 2.0, 63.0, 25.0, 40.0, 25.0]]},
        # RLE, as a list of dicts (the form the official loader reads)
        {"id": 103, "image_id": 2, "category_id": 2, "iscrowd": 0,
         "segmentation": [rle_of(_disc(h2, w2, 20, 24, 12))]},
        {"id": 104, "image_id": 3, "category_id": 3, "iscrowd": 0,
         "segmentation": [[10.0, 10.0, 45.0, 12.0, 40.0, 48.0, 8.0, 44.0]]},
        # empty segmentation: an all-zero ground truth
        {"id": 105, "image_id": 3, "category_id": 3, "iscrowd": 0, "segmentation": []},
    ]


def _sent(text: str, sent_id: int) -> dict:
    return {"sent": text, "raw": text, "tokens": text.split(), "sent_id": sent_id}


REFS = [
    # ref_id, image, ann, split, sentences
    (1, 1, 101, "val", ["  The Left Horse ", "horse on the LEFT"]),
    (2, 1, 102, "val", ["the two boxes"]),
    (3, 2, 103, "testA", ["Round thing", "the disc"]),
    (4, 3, 104, "testB", ["big quad"]),
    (5, 3, 105, "testAB", ["nothing marked"]),  # in testA and testB (REFER's split rule)
    (6, 1, 999, "val", ["annotation is missing"]),  # a data error, recorded
    (7, 2, 103, "train", ["train only"]),  # not in any evaluated split
]

GREFS = [
    # ref_id, image, ann ids, split, sentences
    (11, 1, [101, 102], "val", ["Both Things"]),  # several objects: union clipped to 1
    (12, 1, [-1], "val", ["the unicorn"]),  # no target
    (13, 2, [103], "testA", ["the round one"]),  # RLE annotation
    (14, 3, [104], "testB", ["quad shape", "the quad"]),
    (15, 1, [101], "train", ["train ref on a val image"]),  # the official loader's quirk
]


def write_refer_root(root: Path) -> Path:
    """DATA_ROOT with refcoco/ and grefcoco/ (same images and annotations) and the images."""
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    images = []
    for image_id, (h, w, seed) in IMAGES.items():
        Image.fromarray(sample_image(seed, h, w)).save(root / IMAGE_DIR / file_name(image_id),
                                                       quality=95)
        images.append({"id": image_id, "file_name": file_name(image_id), "height": h,
                       "width": w})
    instances = {"images": images, "annotations": annotations(),
                 "categories": [{"id": i, "name": f"c{i}"} for i in (1, 2, 3)]}
    sent_id = 1000
    refs = []
    for ref_id, image_id, ann_id, split, sents in REFS:
        ss = []
        for text in sents:
            ss.append(_sent(text, sent_id))
            sent_id += 1
        refs.append({"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": split,
                     "sentences": ss, "category_id": 1,
                     "file_name": file_name(image_id)[:-4] + f"_{ann_id}.jpg"})
    (root / "refcoco").mkdir(parents=True, exist_ok=True)
    with open(root / "refcoco" / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    (root / "refcoco" / "instances.json").write_text(json.dumps(instances))
    grefs = []
    for ref_id, image_id, ann_ids, split, sents in GREFS:
        ss = []
        for text in sents:
            ss.append(_sent(text, sent_id))
            sent_id += 1
        grefs.append({"ref_id": ref_id, "ann_id": ann_ids, "image_id": image_id,
                      "split": split, "sentences": ss, "category_id": [1],
                      "no_target": ann_ids == [-1]})
    (root / "grefcoco").mkdir(parents=True, exist_ok=True)
    (root / "grefcoco" / "grefs(unc).json").write_text(json.dumps(grefs))
    (root / "grefcoco" / "instances.json").write_text(json.dumps(instances))
    return root


def official_refcoco_truth(ann: dict, h: int, w: int) -> np.ndarray:
    """The official RefCOCO loader's ground truth, with pycocotools (its rule, restated)."""
    from pycocotools import mask as cm

    seg = ann["segmentation"]
    if len(seg) == 0:
        return np.zeros((h, w), np.uint8)
    if isinstance(seg[0], list):
        rle = cm.frPyObjects(seg, h, w)
    else:
        rle = [dict(r, counts=r["counts"].encode()) for r in seg]
    return np.sum(cm.decode(rle), axis=2).astype(np.uint8)


def official_grefcoco_truth(anns: list[dict | None], h: int, w: int) -> np.ndarray:
    """gRefCOCO's: polygons (and, here, RLE) of every annotation, summed, clipped to 1."""
    from pycocotools import mask as cm

    m = np.zeros((h, w), np.int64)
    if any(a is None for a in anns):
        return m.astype(np.uint8)
    for ann in anns:
        seg = ann["segmentation"]
        if isinstance(seg[0], list):
            rle = cm.frPyObjects(seg, h, w)
        else:
            rle = [dict(r, counts=r["counts"].encode()) for r in seg]
        m += np.sum(cm.decode(rle), axis=2).astype(np.int64)
    return (m > 0).astype(np.uint8)


def write_camera_bag(path: Path, frames: list[np.ndarray], stamps: list[int],
                     compressed: bool = False) -> Path:
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer

    from stamp_ros.bag.interfaces import typestore

    ts = typestore()
    types = ts.types
    topic = "/cam/image/compressed" if compressed else "/cam/image"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = None
        for k, (rgb, stamp) in enumerate(zip(frames, stamps, strict=True)):
            header = types["std_msgs/msg/Header"](
                types["builtin_interfaces/msg/Time"](stamp // 10**9, stamp % 10**9), "cam")
            if compressed:
                ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                assert ok
                msg = types["sensor_msgs/msg/CompressedImage"](header, "png",
                                                               np.asarray(data).reshape(-1))
            else:
                h, w = rgb.shape[:2]
                msg = types["sensor_msgs/msg/Image"](header, h, w, "rgb8", 0, w * 3,
                                                     np.ascontiguousarray(rgb).reshape(-1))
            if conn is None:
                conn = writer.add_connection(topic, msg.__msgtype__, typestore=ts)
            # logged a little after capture, as a recorder would
            writer.write(conn, stamp + 5_000_000 + k, ts.serialize_cdr(msg, msg.__msgtype__))
    return path
