"""Films of two hands: the finder splits them (and nothing else), the pipeline scores each hand where it lies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepxray.hand_finder import background_level, find_hands
from deepxray.labels import JOINT_NAMES
from deepxray.phantoms.phantom import render_phantom
from deepxray.phantoms.stored import store

SHIPPED = Path(__file__).resolve().parents[1] / "models"


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", np.ascontiguousarray(image))[1].tobytes()


def inside(region, centers) -> bool:
    return all(region.x0 <= x < region.x1 and region.y0 <= y < region.y1 for x, y in centers.values())


@pytest.mark.slow
@pytest.mark.parametrize("index", range(4))
def test_a_two_hand_film_is_split_between_the_hands(index):
    phantom = render_phantom(21, index, "both_hands")
    regions = find_hands(phantom.image)
    assert len(regions) == 2 and regions[0].x1 == regions[1].x0  # side by side, left side first
    for hand in phantom.hands:  # each side holds every joint of one hand
        assert sum(inside(region, hand.centers) for region in regions) == 1
    stored = store(phantom, "turned270")  # stored turned: one hand above the other
    turned = find_hands(stored.image)
    assert len(turned) == 2 and turned[0].y1 == turned[1].y0
    for hand in stored.hands:
        assert sum(inside(region, hand.centers) for region in turned) == 1


@pytest.mark.slow
@pytest.mark.parametrize("body_part", ["left_hand", "right_hand", "foot", "chest", "other_radiograph"])
def test_a_film_of_one_hand_or_other_part_is_not_split(body_part):
    for index in range(4):
        assert find_hands(render_phantom(21, index, body_part).image) == [], index


def test_nothing_to_split_in_a_blank_or_tiny_image():
    assert find_hands(np.zeros((300, 400), np.uint16)) == []
    assert find_hands(np.full((8, 8), 0.5, np.float32)) == []


def test_the_tissue_level_lies_between_background_and_soft_tissue_not_soft_tissue_and_bone():
    rng = np.random.default_rng(0)
    film = np.concatenate([rng.normal(level, 0.02, 4000) for level in (0.05, 0.35, 0.85)] + [np.full(500, 0.85)])
    assert 0.08 < background_level(np.clip(film, 0, 1)) < 0.32


@pytest.fixture(scope="module")
def shipped_models():
    from deepxray.models.runtime import local_models

    return local_models(SHIPPED, threads=1)


def score(models, data: bytes) -> dict:
    from deepxray.pipeline import score_radiograph

    return asyncio.run(score_radiograph(data, models))


@pytest.mark.slow
def test_both_hands_are_scored_where_they_lie_with_laterality_from_anatomy(shipped_models):
    phantom = render_phantom(22, 0, "both_hands")
    answer = score(shipped_models, png(phantom.image))
    assert answer["body_part"]["label"] == "both_hands" and answer["hands_not_scored"] == []
    assert [hand["laterality"] for hand in answer["hands"]] == ["L", "R"]
    assert answer["scores"] == answer["hands"][0]["scores"] and answer["laterality"] == "L"
    for hand, truth in zip(answer["hands"], phantom.hands, strict=True):  # both lists: left hand first
        for name in JOINT_NAMES:  # in the uploaded film's coordinates, within a quarter of an MCP spacing
            assert np.hypot(*np.subtract(hand["joints"][name]["center"], truth.centers[name])) < 40, name
        x0, y0, x1, y1 = hand["box"]
        assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in truth.centers.values())
        agreeing = sum(hand["scores"][name] == truth.scores[name] for name in JOINT_NAMES)
        assert agreeing >= 8, (hand["scores"], truth.scores)
    mirrored = score(shipped_models, png(phantom.image[:, ::-1]))  # a left hand mirrored is a right hand
    assert [hand["laterality"] for hand in mirrored["hands"]] == ["L", "R"]
    assert mirrored["hands"][0]["scores"] == answer["hands"][1]["scores"]


@pytest.mark.slow
def test_a_hand_cut_off_by_the_film_edge_is_reported_with_its_reason(shipped_models):
    """The second hand cut through its fingers: the first is scored; the cut one is listed with why it was not
    scored (or, where the body-part model took that side for no hand at all, named in a warning)."""
    phantom = render_phantom(13, 1, "both_hands")
    far = next(hand for hand in phantom.hands if hand.box[0] > 0)
    near = next(hand for hand in phantom.hands if hand is not far)
    answer = score(shipped_models, png(phantom.image[:, : int(far.centers["mcp3"][0])]))
    assert [hand["laterality"] for hand in answer["hands"]] == [near.laterality]
    (refused,) = answer["hands_not_scored"]
    assert refused["error"] in ("joints_not_found", "implausible_joints", "orientation_unclear")
    assert refused["box"][0] > 0 and refused["detail"].endswith(".")
    assert answer["body_part"]["label"] == "both_hands"


@pytest.mark.slow
def test_a_single_hand_the_finder_splits_is_scored_whole(shipped_models):
    """A left hand turned by 20 degrees on an enlarged canvas, which the finder splits between thumb and fingers:
    one side shows no hand, so the film is scored whole, as the left hand it is (split sides alone once gave a
    right hand, probability 0.74)."""
    from deepxray.training.data import rotate_image

    phantom = render_phantom(1000, 163, "left_hand", "clinical")
    turned, centers = rotate_image(phantom.image, phantom.centers, 20.0)
    assert len(find_hands(turned)) == 2
    answer = score(shipped_models, png(turned))
    assert answer["laterality"] == "L" and [hand["laterality"] for hand in answer["hands"]] == ["L"]
    assert answer["body_part"]["label"] == "left_hand" and answer["hands_not_scored"] == []
    for name in JOINT_NAMES:
        assert np.hypot(*np.subtract(answer["joints"][name]["center"], centers[name])) < 40, name
