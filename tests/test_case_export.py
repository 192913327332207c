"""Stored cases exported back to training (`deepxray cases export`): one record per hand in the manifest format
`deepxray train --data DIR` reads, each joint's centre on the joint in the exported picture, reviewed grades
where a clinician gave them; and `deepxray cases delete`.

Films are drawn here: a bright dot at every joint centre on a darker, noisy film, so a centre is right when the
dot's centroid in the exported PNG sits on it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest

from deepxray.cases.export import export_cases
from deepxray.cases.records import FilmImage, JointRecord, JointReview, NewCase
from deepxray.cases.store import CaseStore
from deepxray.cli import main
from deepxray.imaging.model_inputs import crop_boxes
from deepxray.labels import BODY_PARTS, JOINT_NAMES
from deepxray.training.data import CONTEXT_CROP_SIZE, ManifestSource

# A phantom left hand's joints (seed 6, image 0, a 2048 x 2560 film) at a quarter of the size: 512 x 640.
LEFT_HAND = {
    "mcp1": (337.36, 252.96), "mcp2": (223.23, 185.64), "mcp3": (188.82, 202.76), "mcp4": (165.31, 236.34),
    "mcp5": (142.66, 264.71), "pip1": (360.1, 185.02), "pip2": (198.5, 102.81), "pip3": (149.41, 113.46),
    "pip4": (117.17, 157.89), "pip5": (96.67, 206.63),
}  # fmt: skip
FILM = (640, 512)  # rows, columns of one hand's film
MODELS = {"body_part": "body_part@1.0.0", "joint_detection": "joint_detection@1.0.0",
          "ratingen_score": "ratingen_score@1.0.0"}  # fmt: skip
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
SUBPIXEL = 4  # cv2.circle's `shift`: centres to 1/16 pixel
DOT = 6  # radius, film pixels
PREVIEW = 0.25  # the preview's scale: a centre off by half a film pixel is off by 0.375 preview pixels


def right_hand(offset: float = 0.0) -> dict:
    """The left hand mirrored: a right hand on a film of the same size (moved right by `offset`)."""
    return {name: (offset + FILM[1] - 1 - x, y) for name, (x, y) in LEFT_HAND.items()}


def draw(shape: tuple[int, int], hands: list[dict], seed: int) -> np.ndarray:
    """A 16-bit film: noise between 5000 and 15000, a dot of 60000 (radius 6) at every joint."""
    film = np.random.default_rng(seed).integers(5000, 15000, size=shape).astype(np.uint16)
    for centers in hands:
        for x, y in centers.values():
            center = (round(x * 2**SUBPIXEL), round(y * 2**SUBPIXEL))
            cv2.circle(film, center, DOT * 2**SUBPIXEL, 60000, thickness=-1, lineType=cv2.LINE_AA, shift=SUBPIXEL)
    return film


def hand_answer(laterality: str, centers: dict, scores: dict) -> dict:
    boxes = np.array(list(crop_boxes(centers).values()))
    joints = {name: {"score": scores[name], "probabilities": [1 / 6] * 6, "center": list(centers[name]),
                     "box": list(crop_boxes(centers)[name]), "confidence": 0.9} for name in JOINT_NAMES}  # fmt: skip
    box = [*boxes[:, :2].min(0).tolist(), *boxes[:, 2:].max(0).tolist()]
    return {"laterality": laterality, "scores": scores, "total": sum(scores.values()), "joints": joints, "box": box,
            "confidence": 0.9}  # fmt: skip


def new_case(case_id: str, hands: list[tuple[str, dict, dict]], film_size, image, turned: int = 0, hours=0):
    answers = [hand_answer(*hand) for hand in hands]
    answer = {"scores": answers[0]["scores"], "total": answers[0]["total"],
              "body_part": {"label": "both_hands" if len(hands) > 1 else f"{'left' if hands[0][0] == 'L' else 'right'}_hand",
                            "probability": 0.9},
              "laterality": answers[0]["laterality"], "joints": answers[0]["joints"], "hands": answers,
              "hands_not_scored": [], "orientation": {"rotated_deg": turned}, "warnings": [], "models": MODELS,
              "request_id": case_id, "notice": "research use only", "case_id": case_id}  # fmt: skip
    joints = [
        JointRecord(
            index,
            hand["laterality"],
            name,
            joint["score"],
            joint["probabilities"],
            tuple(joint["center"]),
            np.ones(8, np.float32),
        )  # fmt: skip
        for index, hand in enumerate(answers)
        for name, joint in hand["joints"].items()
    ]
    return NewCase(answer, MODELS, film_size, joints, image, case_id=case_id, created_at=T0 + timedelta(hours=hours))


def png(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", pixels)[1].tobytes()


def grades(value: int) -> dict:
    return dict.fromkeys(JOINT_NAMES, value)


@pytest.fixture()
def store_url(tmp_path) -> str:
    """A store with four cases: a left hand kept at full size (16 bit), reviewed; a film of both hands kept as an
    8-bit preview at a quarter of the size; a right hand stored turned (the service turned it 90 degrees clockwise), kept at
    full size (8 bit), reviewed; and a case kept without a picture."""
    url = f"sqlite:///{tmp_path / 'cases.sqlite'}"
    left_film = draw(FILM, [LEFT_HAND], seed=1)
    both = right_hand(), {name: (x + FILM[1], y) for name, (x, y) in LEFT_HAND.items()}
    both_film = draw((FILM[0], 2 * FILM[1]), list(both), seed=2)
    preview = cv2.resize(both_film, None, fx=PREVIEW, fy=PREVIEW, interpolation=cv2.INTER_AREA)
    preview = (preview >> 8).astype(np.uint8)
    upright = (draw(FILM, [right_hand()], seed=3) >> 8).astype(np.uint8)
    turned = np.ascontiguousarray(np.rot90(upright, 1))  # stored a quarter turn anticlockwise
    turned_centers = {name: (y, FILM[1] - 1 - x) for name, (x, y) in right_hand().items()}
    with CaseStore.open(url) as store:
        store.add(new_case("a" * 32, [("L", LEFT_HAND, grades(1))], (512, 640),
                           FilmImage(png(left_film), "original", 1.0)))  # fmt: skip
        store.add(new_case("b" * 32, [("L", both[1], grades(2)), ("R", both[0], grades(3))], (1024, 640),
                           FilmImage(png(preview), "preview", PREVIEW), hours=1))  # fmt: skip
        store.add(new_case("c" * 32, [("R", turned_centers, grades(4))], (640, 512),
                           FilmImage(png(turned), "original", 1.0), turned=90, hours=2))  # fmt: skip
        store.add(new_case("d" * 32, [("L", LEFT_HAND, grades(5))], (512, 640), None, hours=3))
        store.review("a" * 32, "alice", [JointReview(0, "mcp2", "corrected", 4, "erosion")])
        store.review("c" * 32, "bob", [JointReview(0, "pip1", "accepted", None)])
    return url


def dot_centroid(pixels: np.ndarray, x: float, y: float, reach: int) -> tuple[float, float]:
    """Where the dot near (x, y) is: the centroid of the pixels brighter than the film's noise."""
    x0, y0 = max(0, round(x) - reach), max(0, round(y) - reach)
    window = pixels[y0 : round(y) + reach + 1, x0 : round(x) + reach + 1].astype(np.float64)
    weights = np.clip(window - np.iinfo(pixels.dtype).max * 0.3, 0, None)
    rows, columns = np.indices(window.shape)
    return x0 + (weights * columns).sum() / weights.sum(), y0 + (weights * rows).sum() / weights.sum()


def read(out) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_every_hand_is_a_record_with_centres_on_its_joints(store_url, tmp_path):
    out = tmp_path / "export"
    with CaseStore.open(store_url) as store:
        summary = export_cases(store, out)
    assert (summary.cases, summary.hands, summary.skipped) == (3, 4, 1)
    assert summary.text() == (
        f"exported 3 cases (4 hands) to {out / 'manifest.jsonl'}; 1 skipped (kept without a picture of the film: "
        "store_images none)"
    )
    records = read(out)
    assert [(r["case_id"][0], r["hand"], r["body_part"], r["laterality"]) for r in records] == [
        ("a", 0, "left_hand", "L"), ("b", 0, "left_hand", "L"), ("b", 1, "right_hand", "R"), ("c", 0, "right_hand", "R")
    ]  # fmt: skip
    depths = {"a": np.uint16, "b": np.uint8, "c": np.uint8}  # as stored: the original's 16 bit, the preview's 8
    scales = {"a": 1.0, "b": PREVIEW, "c": 1.0}
    for record in records:
        pixels = cv2.imread(str(out / record["file"]), cv2.IMREAD_UNCHANGED)
        assert pixels.dtype == depths[record["case_id"][0]] and pixels.ndim == 2
        assert (record["kind"], record["width"], record["height"]) == ("hand", pixels.shape[1], pixels.shape[0])
        assert set(record["joints"]) == set(JOINT_NAMES)
        for name, joint in record["joints"].items():
            x, y = joint["center"]
            found = dot_centroid(pixels, x, y, reach=round(DOT * scales[record["case_id"][0]]) + 3)
            assert np.abs(np.subtract(found, (x, y))).max() < 0.25, (record["file"], name, (x, y), found)
    # A film of both hands is cut in two between the hands: the two sides together are the whole film, each its
    # full height (wrist and fingertips kept), neither reaching far into the other hand's half.
    width = 2 * FILM[1] * PREVIEW
    half = [r for r in records if r["case_id"][0] == "b"]
    assert sum(r["width"] for r in half) == width and all(r["width"] < 0.7 * width for r in half)
    assert all(r["height"] == FILM[0] * PREVIEW for r in half)
    # A film of one hand is exported whole.
    assert (records[0]["width"], records[0]["height"]) == (FILM[1], FILM[0])
    # The turned film is turned upright, as the models saw it: fingertips above the knuckles.
    turned = records[3]["joints"]
    assert all(turned[f"pip{i}"]["center"][1] < turned[f"mcp{i}"]["center"][1] for i in range(2, 6))


def test_labels_are_the_reviewed_grades_where_reviewed(store_url, tmp_path):
    with CaseStore.open(store_url) as store:
        export_cases(store, tmp_path / "all")
        summary = export_cases(store, tmp_path / "reviewed", reviewed_only=True)
    records = {(r["case_id"][0], r["hand"]): r for r in read(tmp_path / "all")}
    reviewed = records["a", 0]["joints"]
    assert reviewed["mcp2"] == {**reviewed["mcp2"], "score": 4, "label_source": "review"}
    # Joints the reviewer left alone were accepted as the model gave them.
    assert all(reviewed[name]["score"] == 1 and reviewed[name]["label_source"] == "review"
               for name in JOINT_NAMES if name != "mcp2")  # fmt: skip
    assert records["a", 0]["label_source"] == "review"
    assert all(j["score"] == 4 and j["label_source"] == "review" for j in records["c", 0]["joints"].values())
    for hand, grade in ((0, 2), (1, 3)):
        assert records["b", hand]["label_source"] == "model"
        assert all(j == {**j, "score": grade, "label_source": "model"} for j in records["b", hand]["joints"].values())
    assert (summary.cases, summary.hands, summary.skipped) == (2, 2, 0)
    assert [r["case_id"][0] for r in read(tmp_path / "reviewed")] == ["a", "c"]


def test_training_reads_the_export(store_url, tmp_path):
    with CaseStore.open(store_url) as store:
        export_cases(store, tmp_path / "export")
    source = ManifestSource.open(tmp_path / "export")
    jobs = source.jobs()
    assert len(jobs) == 4
    for job in jobs:
        example = source.example(job)
        record = job[1]
        assert example.body_part == BODY_PARTS.index(record["body_part"])
        assert example.crops.shape == (10, CONTEXT_CROP_SIZE, CONTEXT_CROP_SIZE)
        assert example.scores.tolist() == [record["joints"][name]["score"] for name in JOINT_NAMES]
        assert np.isfinite(example.detector_points).all()


def test_cli_export_and_delete(store_url, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["cases", "export", "--out", str(out), "--reviewed-only", "--database-url", store_url]) == 0
    assert capsys.readouterr().out == f"exported 2 cases (2 hands) to {out / 'manifest.jsonl'}; 0 skipped\n"

    assert main(["cases", "delete", "a" * 32, "e" * 32, "--database-url", store_url]) == 2
    assert capsys.readouterr().err == f"deepxray: error: no case {'e' * 32} in the store; nothing deleted\n"
    assert main(["cases", "delete", "--all", "--database-url", store_url]) == 2
    assert "--yes" in capsys.readouterr().err
    assert main(["cases", "delete", "--database-url", store_url]) == 2
    assert capsys.readouterr().err.startswith("deepxray: error: give the case ids")

    assert main(["cases", "delete", "a" * 32, "b" * 32, "--database-url", store_url]) == 0
    assert capsys.readouterr().out == "deleted 2 cases\n"
    with CaseStore.open(store_url) as store:
        assert [item.case_id for item in store.list_cases().items] == ["d" * 32, "c" * 32]
    assert main(["cases", "delete", "--all", "--yes", "--database-url", store_url]) == 0
    assert capsys.readouterr().out == "deleted 2 cases (every case of the store)\n"


def test_cli_uses_the_settings_store(tmp_path, monkeypatch, capsys):
    # No --database-url: the store of DEEPXRAY_DATA_DIR, made (and migrated) on first use.
    monkeypatch.setenv("DEEPXRAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DEEPXRAY_DATABASE_URL", raising=False)
    assert main(["cases", "export", "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith("exported 0 cases (0 hands)")
    assert (tmp_path / "data" / "cases.sqlite").exists()
    assert (
        main(["cases", "export", "--out", str(tmp_path), "--database-url", "postgresql+psycopg://x@127.0.0.1:1/x"]) == 2
    )
    assert capsys.readouterr().err.startswith("deepxray: error: cannot open the case store postgresql+psycopg://")
