"""``stamp-ros eval`` end to end with the tiny real checkpoint: the official numbers, the same masks
as ``stamp-ros segment``, resume after a kill, torchrun with two processes, bad samples, bags,
SAM, ``--compare``.

The datasets are written by the tests in the official layout (:mod:`eval_data`). "Official" here
means the protocol recomputed independently in the test: ground truth from pycocotools exactly
as the official loaders build it, per-sample counts with ``torch.histc`` and float32 sums as the
official script accumulates them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
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
from thread_budget import torch_threads, with_threads

from stamp_ros.cli.main import EXIT_INPUT, main
from stamp_ros.eval.cocomask import decode_rle
from stamp_ros.eval.metrics import score
from stamp_ros.testing.checkpoint import make_test_checkpoint
from stamp_ros.testing.images import sample_image

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--min-pixels", str(56 * 56), "--max-pixels", str(224 * 224), "--device", "cpu"]
ANSWER = "Here: <|seg|> and <|seg|>"  # two masks: only the first one is scored

# Nothing on the eval path may need ROS: the child runs with every ROS import blocked.
BLOCK_ROS = r"""
import sys
BLOCKED = ("rclpy", "rosidl_parser", "rosidl_runtime_py", "sensor_msgs", "std_msgs",
           "builtin_interfaces", "stamp_ros.msg", "stamp_ros.srv", "stamp_ros.action")
class Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{name} is blocked: stamp-ros eval must not need ROS")
        return None
sys.meta_path.insert(0, Block())
from stamp_ros.cli.main import main
sys.exit(main())
"""


def run_eval(args: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["eval", *args])
    out, err = capsys.readouterr()
    return code, out, err


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


EVAL_THREADS = 1
"""torch threads of every eval child here; the in-process runs they are held to bit for bit
use the same (test/thread_budget.py)."""


def child_env(**extra: str) -> dict[str, str]:
    env = with_threads(os.environ, EVAL_THREADS)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_test_checkpoint(tmp_path_factory.mktemp("eval") / "ckpt", answer=ANSWER, seed=2)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_refer_root(tmp_path_factory.mktemp("refer") / "data")


@pytest.fixture(scope="module")
def sentence_run(ckpt, data_root, tmp_path_factory) -> tuple[Path, dict]:
    """One run of refcoco + grefcoco, sentence prompts, in a child process at
    :data:`EVAL_THREADS` (the torchrun test compares against it at the same budget) and no ROS."""
    out = tmp_path_factory.mktemp("runs") / "sentence"
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_ROS, "eval", "--dataset", "refcoco,grefcoco",
         "--data-root", str(data_root), "--model", str(ckpt), *SMALL, "--out", str(out),
         "--json", "--worst", "2", "--quiet"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env=child_env())
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def template_run(ckpt, data_root, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "template"
    proc = subprocess.run(
        [sys.executable, "-m", "stamp_ros.cli", "eval", "--dataset", "refcoco",
         "--data-root", str(data_root), "--model", str(ckpt), *SMALL, "--out", str(out),
         "--prompt", "template", "--seed", "3", "--json", "--worst", "0", "--quiet"],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=child_env())
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout)


# --------------------------------------------------------------------------- the protocol


def _official_truth(rec: dict) -> np.ndarray:
    anns = {a["id"]: a for a in annotations()}
    h, w, _ = IMAGES[rec["meta"]["image_id"]]
    if rec["dataset"] == "grefcoco":
        ids = {r: ids for r, _i, ids, _s, _t in GREFS}[rec["meta"]["ref_id"]]
        return official_grefcoco_truth([anns.get(a) for a in ids], h, w)
    return official_refcoco_truth(anns[rec["meta"]["ann_id"]], h, w)


def _official_metrics(recs: list[dict]) -> tuple[float, float, int]:
    """cIoU, gIoU and the sample count as the official script computes them (float32 sums)."""
    inter = torch.zeros(2)
    union = torch.zeros(2)
    acc = torch.zeros(2)
    n = 0
    for rec in recs:
        if rec["status"] == "data_error":
            continue
        pred = torch.from_numpy(decode_rle(rec["pred"]).astype(np.float64)).reshape(-1)
        target = torch.from_numpy(_official_truth(rec).astype(np.float64)).reshape(-1)
        a_i = torch.histc(pred[pred == target].float(), bins=2, min=0, max=1)
        a_o = torch.histc(pred.float(), bins=2, min=0, max=1)
        a_t = torch.histc(target.float(), bins=2, min=0, max=1)
        a_u = a_o + a_t - a_i
        inter += a_i
        union += a_u
        iou = a_i / (a_u + 1e-5)
        iou[a_u == 0] = 1.0
        acc += iou
        n += 1
    return float((inter / (union + 1e-5))[1]), float(acc[1] / n), n


def test_benchmark_numbers_are_the_official_computation(sentence_run):
    out, summary = sentence_run
    recs = records(out)
    assert len(recs) == len({r["key"] for r in recs}) == 15
    splits = summary["splits"]
    assert list(splits) == ["refcoco/val", "refcoco/testA", "refcoco/testB", "grefcoco/val",
                            "grefcoco/testA", "grefcoco/testB"]
    for name, s in splits.items():
        mine = [r for r in recs if f"{r['dataset']}/{r['split']}" == name]
        ciou, giou, n = _official_metrics(mine)
        assert s["grid"]["samples"] == s["scored"] == n
        assert s["grid"]["ciou"] == pytest.approx(ciou, abs=1e-6), name
        assert s["grid"]["giou"] == pytest.approx(giou, abs=1e-6), name
    # Non-trivial numbers, and the overlap rule was exercised (ann 102 of refcoco/val).
    assert any(s["grid"]["intersection"] > 0 for s in splits.values())
    two = next(r for r in recs if r["key"] == "refcoco/val/r2s1002")
    truth = _official_truth(two)
    assert (truth == 2).any() and two["truth_area"] == int((truth == 1).sum())
    # The missing annotation is recorded and excluded, not fatal.
    val = splits["refcoco/val"]
    assert (val["samples"], val["scored"], val["excluded"], val["scored_as_empty"]) == (4, 3, 1, 0)
    assert val["errors"] == [{"key": "refcoco/val/r6s1007", "status": "data_error",
                              "error": "annotation 999 is not in instances.json"}]
    assert splits["grefcoco/val"]["extras"]["targets"]["grid"]["no_target_samples"] == 1
    # Two masks per answer: the first is scored, the union of both is an extra.
    ok = [r for r in recs if r["status"] == "ok"]
    assert {r["num_masks"] for r in ok} == {2}
    assert all(r["union"]["i"] >= r["grid"]["i"] for r in ok)
    assert summary["machine"]["ranks"] == 1 and summary["versions"]["torch"] == torch.__version__
    assert summary["dtype"] == "float32" and summary["settings"]["prompt"] == "sentence"
    table = (out / "table.md").read_text()
    assert "| grid only | " in table and "## gRefCOCO" in table and "## Extras" in table
    for s in splits.values():
        assert 1 <= len(s["worst"]) <= 2
        for w in s["worst"]:
            assert (out / w["file"]).is_file()
        ious = [w["iou"] for w in s["worst"]]
        assert ious == sorted(ious)
    assert not (out / "parts").exists()  # merged into samples.jsonl


def test_masks_and_answers_equal_stamp_ros_segment(template_run, ckpt, tmp_path, capsys):
    """The engine is the node's: the same prompt on the same image file gives the same masks."""
    out, _summary = template_run
    recs = [r for r in records(out) if r["status"] == "ok"]
    assert any(r["prompt"] != r["text"] for r in recs)  # template prompts are what was asked
    for k, rec in enumerate(recs[:5]):
        masks = tmp_path / f"m{k}"
        capsys.readouterr()
        with torch_threads(EVAL_THREADS):  # the child's budget: the same bits
            assert main(["segment", "--model", str(ckpt), "--image", rec["source"],
                         "--query", rec["prompt"], "--out-dir", str(masks), "--json",
                         *SMALL]) == 0
        seg = json.loads(capsys.readouterr().out)
        assert seg["text"] == rec["answer"]
        first = np.asarray(Image.open(masks / "mask_0.png")) > 0
        np.testing.assert_array_equal(first, decode_rle(rec["pred"]) > 0)
        union = np.zeros_like(first)
        for i in range(len(seg["instances"])):
            union |= np.asarray(Image.open(masks / f"mask_{i}.png")) > 0
        truth = _official_truth(rec)
        assert score(union.astype(np.uint8), truth).as_dict() == rec["union"]


def test_compare_two_runs(sentence_run, template_run, capsys):
    a, b = sentence_run[0] / "samples.jsonl", template_run[0] / "samples.jsonl"
    code, out, _ = run_eval(["--compare", str(a), str(b), "--json"], capsys)
    assert code == 0
    c = json.loads(out)
    ra = {r["key"]: r for r in records(a.parent)}
    rb = {r["key"]: r for r in records(b.parent)}
    common = [k for k in ra.keys() & rb.keys() if ra[k]["scored"] and rb[k]["scored"]]
    assert len(c["deltas"]) == len(common) == 8
    assert c["only_in_a"] == 6 and c["only_in_b"] == 0  # grefcoco only in the sentence run
    for d in c["deltas"]:
        assert d["delta"] == rb[d["key"]]["grid"]["iou"] - ra[d["key"]]["grid"]["iou"]
        crossed = (d["iou_a"] < 0.5 <= d["iou_b"]) or (d["iou_b"] < 0.5 <= d["iou_a"])
        assert bool(d["flip"]) == crossed
    val = c["splits"]["refcoco/val"]
    assert val["a"]["ciou"] == sentence_run[1]["splits"]["refcoco/val"]["grid"]["ciou"]
    assert val["b"]["ciou"] == template_run[1]["splits"]["refcoco/val"]["grid"]["ciou"]
    assert val["improved"] + val["worse"] + val["same"] == val["compared"] == 3
    code, text, _ = run_eval(["--compare", str(a), str(b), "--flip-threshold", "0.05"], capsys)
    assert code == 0
    assert "settings that differ: " in text and "prompt 'sentence' -> 'template'" in text
    assert "refcoco/testA" in text


# --------------------------------------------------------------------------- resume


def _lines(path: Path) -> int:
    """Complete records in a part file (a line being written does not count yet)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def kill_after_records(cmd: list[str], part: Path, records_written: int) -> None:
    """Run ``cmd`` (an eval blocked by a FIFO image after some samples) until ``part`` holds
    ``records_written`` records, then SIGKILL its process group, as a crash would."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while (_lines(part) < records_written and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.05)  # polling the part file, not a synchronisation
        assert proc.poll() is None, proc.stderr.read().decode()
        assert _lines(part) == records_written
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def test_resume_after_a_killed_run_gives_the_same_numbers(ckpt, data_root, sentence_run,
                                                         tmp_path):
    """Image 3 is a FIFO: the run blocks reading it after the 6 samples before it (the helper
    thread opens it one sample ahead), is killed with SIGKILL, and resumes once it is a file."""
    data = tmp_path / "data"
    shutil.copytree(data_root, data)
    image3 = data / IMAGE_DIR / file_name(3)
    image3.unlink()
    os.mkfifo(image3)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "stamp_ros.cli", "eval", "--dataset", "refcoco",
           "--data-root", str(data), "--model", str(ckpt), *SMALL, "--out", str(out),
           "--quiet", "--worst", "0"]
    part = out / "parts" / "rank0.jsonl"
    # val (4, one a data error) and testA's two image-2 samples, then blocked on image 3
    kill_after_records(cmd, part, 6)
    assert not (out / "samples.jsonl").exists() and not (out / "summary.json").exists()
    # A kill in the middle of a write leaves half a line: it is skipped, not fatal.
    with open(part, "a") as f:
        f.write('{"key": "refcoco/testA/r5s10')
    image3.unlink()
    shutil.copy(data_root / IMAGE_DIR / file_name(3), image3)
    done = subprocess.run([*cmd, "--json"], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    resumed = json.loads(done.stdout)
    assert resumed["resumed_samples"] == 6
    recs = records(out)
    assert len(recs) == len({r["key"] for r in recs}) == 9
    reference = sentence_run[1]["splits"]
    for name, s in resumed["splits"].items():
        for key in ("grid", "samples", "scored", "excluded", "scored_as_empty"):
            assert s[key] == reference[name][key], (name, key)
        assert s["extras"]["targets"] == reference[name]["extras"]["targets"]


def test_a_finished_run_rewrites_its_reports_without_the_model(sentence_run, data_root, ckpt,
                                                              tmp_path, capsys, monkeypatch):
    out = tmp_path / "again"
    shutil.copytree(sentence_run[0], out)
    (out / "summary.json").unlink()

    def no_model(_args):
        raise AssertionError("the model was loaded although every sample was done")

    monkeypatch.setattr("stamp_ros.engine.options.segmenter_from_args", no_model)
    code, text, _ = run_eval(["--dataset", "refcoco,grefcoco", "--data-root", str(data_root),
                              "--model", str(ckpt), *SMALL, "--out", str(out), "--json",
                              "--quiet", "--worst", "0"], capsys)
    assert code == 0
    summary = json.loads(text)
    assert summary["resumed_samples"] == 15
    for name, s in summary["splits"].items():
        assert s["grid"] == sentence_run[1]["splits"][name]["grid"]


def test_limit_takes_the_first_samples_of_each_split(data_root, ckpt, tmp_path, capsys):
    code, text, err = run_eval(["--dataset", "refcoco", "--split", "val,testB", "--limit", "2",
                                "--data-root", str(data_root), "--model", str(ckpt), *SMALL,
                                "--out", str(tmp_path / "o"), "--json", "--quiet"], capsys)
    assert code == 0, err
    summary = json.loads(text)
    assert list(summary["splits"]) == ["refcoco/val", "refcoco/testB"]
    assert summary["settings"]["limit"] == 2
    got = records(tmp_path / "o")
    assert [r["key"] for r in got] == ["refcoco/val/r1s1000", "refcoco/val/r1s1001",
                                       "refcoco/testB/r4s1005", "refcoco/testB/r5s1006"]


def test_other_settings_in_the_same_folder_are_refused(sentence_run, data_root, ckpt, capsys):
    code, _, err = run_eval(["--dataset", "refcoco", "--data-root", str(data_root),
                             "--model", str(ckpt), *SMALL, "--out", str(sentence_run[0]),
                             "--prompt", "template", "--quiet"], capsys)
    assert code == EXIT_INPUT
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "holds results of other settings" in lines[0]


# --------------------------------------------------------------------------- torchrun


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(ckpt, data_root, sentence_run, tmp_path):
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "stamp_ros.cli", "eval", "--dataset", "refcoco,grefcoco",
         "--data-root", str(data_root), "--model", str(ckpt), *SMALL, "--out", str(out),
         "--json", "--worst", "2", "--quiet"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env=child_env(GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1"))
    assert proc.returncode == 0, proc.stderr
    dist = json.loads(proc.stdout)  # only rank 0 prints
    single = sentence_run[1]
    assert dist["machine"]["ranks"] == 2 and dist["machine"]["backend"] == "gloo"
    assert list(dist["splits"]) == list(single["splits"])
    for name, s in dist["splits"].items():
        ref = single["splits"][name]
        for key in ("grid", "samples", "scored", "excluded", "scored_as_empty", "published"):
            assert s[key] == ref[key], (name, key)  # exactly, not approximately
        assert s["extras"]["targets"] == ref["extras"]["targets"]
        assert s["extras"]["union_of_masks"] == ref["extras"]["union_of_masks"]
        assert [w["key"] for w in s["worst"]] == [w["key"] for w in ref["worst"]]

    def comparable(recs):
        return [{k: v for k, v in r.items() if k not in ("timings_ms", "written")}
                for r in recs]

    # every sample exactly once, each with the same record as in the one-process run
    assert comparable(records(out)) == comparable(records(sentence_run[0]))


# --------------------------------------------------------------------------- own data


def _own_dataset(folder: Path, ckpt: Path, capsys) -> Path:
    """JSONL labels: one ground truth equal to the model's own first mask (IoU 1), a missing
    image and an undecodable RLE (data errors), a query the engine refuses (inference error)."""
    folder.mkdir(parents=True)
    lines = []
    for k in range(3):
        Image.fromarray(sample_image(40 + k, 90, 120)).save(folder / f"f{k}.png")
    capsys.readouterr()
    assert main(["segment", "--model", str(ckpt), "--image", str(folder / "f0.png"),
                 "--query", "the first thing", "--out-dir", str(folder / "pred"), *SMALL]) == 0
    capsys.readouterr()
    shutil.copy(folder / "pred" / "mask_0.png", folder / "gt0.png")
    lines.append({"id": "exact", "image": "f0.png", "query": "the first thing",
                  "mask": "gt0.png"})
    box = np.zeros((90, 120), np.uint8)
    box[20:70, 30:90] = 1
    lines.append({"id": "box", "image": "f1.png", "query": "the box",
                  "segmentation": rle_of(box)})
    lines.append({"id": "empty", "image": "f2.png", "query": "nothing here", "mask": None})
    lines.append({"id": "gone", "image": "missing.png", "query": "q", "mask": None})
    lines.append({"id": "badrle", "image": "f1.png", "query": "q",
                  "segmentation": {"size": [90, 120], "counts": "0\x7f"}})
    lines.append({"id": "refused", "image": "f2.png", "query": "a <|image_pad|> trick",
                  "segmentation": rle_of(box)})
    path = folder / "labels.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def test_own_jsonl_data_and_bad_samples(ckpt, tmp_path, capsys):
    labels = _own_dataset(tmp_path / "own", ckpt, capsys)
    out = tmp_path / "out"
    code, text, err = run_eval(["--dataset", "jsonl", "--data", str(labels), "--model",
                                str(ckpt), *SMALL, "--out", str(out), "--json", "--quiet"],
                               capsys)
    assert code == 0, err
    s = json.loads(text)["splits"]["jsonl/labels"]
    assert (s["samples"], s["scored"], s["excluded"], s["scored_as_empty"]) == (6, 4, 2, 1)
    recs = {r["id"]: r for r in records(out)}
    assert recs["exact"]["grid"]["iou"] == pytest.approx(1.0, abs=1e-6)
    assert recs["gone"]["status"] == "data_error" and "cannot read image" in recs["gone"]["error"]
    assert recs["badrle"]["status"] == "data_error"
    assert "undecodable segmentation" in recs["badrle"]["error"]
    refused = recs["refused"]
    assert refused["status"] == "inference_error" and "<|image_pad|>" in refused["error"]
    # scored as an empty prediction: nothing intersects, the union is the ground truth
    assert refused["grid"] == {"i": 0, "u": refused["truth_area"], "iou": 0.0,
                               "pred_empty": True}
    assert {e["key"].rsplit("/", 1)[1] for e in s["errors"]} == {"gone", "badrle", "refused"}
    table = (out / "table.md").read_text()
    assert "## Own data" in table and "| jsonl/labels | grid only | 4 |" in table
    assert "inference errors are scored as an empty prediction" in table
    # --retry-errors runs exactly the three failed samples again
    code, text, err = run_eval(["--dataset", "jsonl", "--data", str(labels), "--model",
                                str(ckpt), *SMALL, "--out", str(out), "--quiet", "--json",
                                "--retry-errors"], capsys)
    assert code == 0, err
    assert json.loads(text)["resumed_samples"] == 3
    again = {r["id"]: r for r in records(out)}
    for sid in ("exact", "box", "empty"):
        assert again[sid] == recs[sid]  # timings included: not run again
    assert again["refused"]["status"] == "inference_error"


def test_plain_resume_after_an_interrupted_retry_keeps_the_retry(ckpt, tmp_path, capsys):
    """`--retry-errors` is killed after one retried sample succeeded (its record is only in
    the part file, the old error still in samples.jsonl); a plain rerun keeps the success."""
    labels = _own_dataset(tmp_path / "own", ckpt, capsys)
    out = tmp_path / "out"
    base = ["eval", "--dataset", "jsonl", "--data", str(labels), "--model", str(ckpt), *SMALL,
            "--out", str(out), "--quiet", "--worst", "0"]
    code, _, err = run_eval(base[1:], capsys)
    assert code == 0, err
    assert {r["id"]: r for r in records(out)}["gone"]["status"] == "data_error"
    # The missing image appears: "gone" succeeds when retried. The next retried sample's
    # image is a FIFO: the run blocks there (its loader opens it one sample ahead).
    folder = labels.parent
    Image.fromarray(sample_image(43, 90, 120)).save(folder / "missing.png")
    f1 = folder / "f1.png"
    shutil.move(f1, folder / "f1.keep")
    os.mkfifo(f1)
    part = out / "parts" / "rank0.jsonl"
    kill_after_records([sys.executable, "-m", "stamp_ros.cli", *base, "--retry-errors"], part, 1)
    (retried,) = [json.loads(line) for line in part.read_text().splitlines()]
    assert retried["id"] == "gone" and retried["status"] == "ok"
    f1.unlink()
    shutil.move(folder / "f1.keep", f1)

    code, text, err = run_eval([*base[1:], "--json"], capsys)
    assert code == 0, err
    assert json.loads(text)["resumed_samples"] == 6  # nothing ran again
    recs = {r["id"]: r for r in records(out)}
    assert recs["gone"] == retried
    assert recs["badrle"]["status"] == "data_error"
    assert recs["refused"]["status"] == "inference_error"


def test_bag_labels_score_like_the_same_frames_as_files(ckpt, tmp_path, capsys):
    pytest.importorskip("rosbags")
    frames = [sample_image(50 + k, 72, 96) for k in range(3)]
    t0 = 1_700_000_000 * 10**9
    stamps = [t0 + k * 50_000_000 for k in range(3)]
    bag = write_camera_bag(tmp_path / "run", frames, stamps)
    box = np.zeros((72, 96), np.uint8)
    box[10:50, 20:70] = 1
    own = tmp_path / "files"
    own.mkdir()
    bag_labels, file_labels = [], []
    for k, frame in enumerate(frames):
        Image.fromarray(frame).save(own / f"{k}.png")
        label = {"id": f"s{k}", "query": f"object {k}", "segmentation": rle_of(box)}
        bag_labels.append({**label, "stamp": stamps[k]})
        file_labels.append({**label, "image": f"{k}.png"})
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps(x) for x in bag_labels))
    (own / "labels.jsonl").write_text("\n".join(json.dumps(x) for x in file_labels))
    code, text, err = run_eval(["--dataset", "bag", "--data", str(bag), "--labels",
                                str(tmp_path / "labels.jsonl"), "--image-topic", "/cam/image",
                                "--model", str(ckpt), *SMALL, "--out", str(tmp_path / "o1"),
                                "--json", "--quiet"], capsys)
    assert code == 0, err
    from_bag = json.loads(text)["splits"]["bag/labels"]
    code, text, err = run_eval(["--dataset", "jsonl", "--data", str(own / "labels.jsonl"),
                                "--model", str(ckpt), *SMALL, "--out", str(tmp_path / "o2"),
                                "--json", "--quiet"], capsys)
    assert code == 0, err
    from_files = json.loads(text)["splits"]["jsonl/labels"]
    assert from_bag["grid"] == from_files["grid"] and from_bag["scored"] == 3
    for a, b in zip(records(tmp_path / "o1"), records(tmp_path / "o2"), strict=True):
        assert a["pred"] == b["pred"] and a["grid"] == b["grid"] and a["answer"] == b["answer"]


@pytest.mark.slow
def test_sam_refinement_reports_grid_and_refined(ckpt, tmp_path, capsys):
    from stamp_ros.testing.sam import make_test_sam

    sam = make_test_sam(tmp_path / "sam.pth")
    folder = tmp_path / "own"
    folder.mkdir()
    box = np.zeros((64, 80), np.uint8)
    box[10:40, 20:60] = 1
    lines = []
    for k in range(2):
        Image.fromarray(sample_image(60 + k, 64, 80)).save(folder / f"{k}.png")
        lines.append({"image": f"{k}.png", "query": f"thing {k}", "segmentation": rle_of(box)})
    (folder / "labels.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    out = tmp_path / "out"
    code, text, err = run_eval(["--dataset", "jsonl", "--data", str(folder / "labels.jsonl"),
                                "--model", str(ckpt), *SMALL, "--refine", "sam",
                                "--sam-checkpoint", str(sam), "--out", str(out), "--json",
                                "--quiet"], capsys)
    assert code == 0, err
    s = json.loads(text)["splits"]["jsonl/labels"]
    assert s["grid"]["samples"] == s["sam"]["samples"] == 2
    assert "| jsonl/labels | + SAM |" in (out / "table.md").read_text()
    for rec in records(out):
        for refine, field in ((["--refine", "sam", "--sam-checkpoint", str(sam)], "sam_pred"),
                              ([], "pred")):
            masks = tmp_path / f"seg-{rec['id']}-{field}"
            capsys.readouterr()
            assert main(["segment", "--model", str(ckpt), "--image", rec["source"], "--query",
                         rec["prompt"], "--out-dir", str(masks), *SMALL, *refine]) == 0
            mask = np.asarray(Image.open(masks / "mask_0.png")) > 0
            np.testing.assert_array_equal(mask, decode_rle(rec[field]) > 0)


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "refcoco"], "needs --data-root"),
    (["--dataset", "coco"], "choose from"),
    (["--dataset", "jsonl"], "needs --data"),
    (["--dataset", "bag", "--data", "."], "needs --labels"),
    (["--dataset", "refcoco,jsonl", "--data-root", "."], "cannot be combined"),
    (["--dataset", "refcoco", "--data-root", ".", "--refine", "sam"], "needs --sam-checkpoint"),
    (["--dataset", "refcoco", "--data-root", "/nonexistent"], "not found"),
    (["--compare", "a.jsonl", "b.jsonl"], "is not a file"),
    ([], "--dataset is required"),
])
def test_usage_errors_are_one_line(args, needle, capsys):
    code, out, err = run_eval(args, capsys)
    assert code == EXIT_INPUT
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stamp-ros: error:") and needle in lines[0], err
    assert out == ""


def test_unwritable_output_is_one_line(data_root, ckpt, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run_eval(["--dataset", "refcoco", "--data-root", str(data_root), "--model",
                             str(ckpt), *SMALL, "--out", str(blocker / "out")], capsys)
    assert code == EXIT_INPUT
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "cannot write there" in lines[0], err
