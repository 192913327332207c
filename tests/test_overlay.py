"""Pictures of a scored film (deepxray.cases.overlay): the viewing image and its scale, the stored picture's round
trip, and what the overlay draws where. Fast: synthetic films and a hand-written answer, no models, no Ray."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from deepxray.api.schemas import ScoreAnswer
from deepxray.cases.overlay import (
    CORRECTION_COLOUR,
    JOINT_BOX_SHARE,
    NOT_SCORED_COLOUR,
    NOTICE_COLOUR,
    SCORE_COLOURS,
    draw_overlay,
    film_image,
    film_to_image,
    image_for_overlay,
    overlay_png,
    viewing_image,
)
from deepxray.labels import JOINT_NAMES, RESEARCH_NOTICE

FILM = (2560, 2048)  # rows, columns of a full-size hand film
BACKGROUND = 90  # gray of the plain view the overlay tests draw on


def _film(shape=FILM, dtype=np.uint16) -> np.ndarray:
    """A dark noisy film (12-bit values in uint16) whose top half is brighter."""
    rng = np.random.default_rng(0)
    film = rng.integers(200, 400, size=shape).astype(np.float64)
    film[: shape[0] // 2] += 1500  # a brighter half, so the window has two levels to show
    return _as(film, dtype)


def _dot_film(shape, dtype, dot: tuple[float, float], radius: float = 6.0) -> np.ndarray:
    """A film with a mid-gray disc at `dot` (x, y, film pixels) on a dark ground, a bright block setting the
    window's top."""
    rng = np.random.default_rng(1)
    film = 500.0 + rng.integers(0, 8, size=shape)
    film[: shape[0] // 8, : shape[1] // 8] = 3500
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    film[(xx - dot[0]) ** 2 + (yy - dot[1]) ** 2 <= radius**2] = 2000
    return _as(film, dtype)


def _as(film: np.ndarray, dtype) -> np.ndarray:
    return (film / 16).astype(np.uint8) if dtype == np.uint8 else film.astype(dtype)


def _jpeg_segments(data: bytes) -> list[int]:
    """The marker bytes of a JPEG's segments up to the image data (start of scan)."""
    assert data[:2] == b"\xff\xd8"
    markers, offset = [], 2
    while data[offset + 1] != 0xDA:
        markers.append(data[offset + 1])
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        offset += 2 + length
    return markers


def _png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunks.append(data[offset + 4 : offset + 8])
        offset += 12 + length
    return chunks


# --- the viewing image ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "max_side"),
    [
        (FILM, 1024),
        ((2560, 3584), 1024),
        ((2560, 3584), 700),
        ((1001, 999), 500),
        ((37, 3001), 1024),
        ((3, 5000), 1024),
        ((300, 200), 64),
    ],
)
def test_viewing_image_fits_max_side_and_keeps_the_aspect_ratio(shape, max_side):
    view, scale = viewing_image(_film(shape), max_side)
    assert view.dtype == np.uint8 and view.ndim == 2
    assert max_side - 1 <= max(view.shape) <= max_side
    assert scale == pytest.approx(max_side / max(shape))
    # Each side is the film's times the scale, to within a pixel (and the pixels cut to an integer step).
    for side, film_side in zip(view.shape, shape, strict=True):
        assert abs(side - film_side * scale) <= 1.0


def test_viewing_image_never_enlarges():
    film = _film((300, 200))
    view, scale = viewing_image(film, 1024)
    assert scale == 1.0 and view.shape == film.shape


def test_viewing_image_windows_to_the_full_8_bit_range():
    view, _ = viewing_image(_film(), 1024)
    low, high = np.percentile(view, [0.5, 99.5])
    assert low <= 5 and high >= 250
    assert view[: view.shape[0] // 4].mean() > view[-view.shape[0] // 4 :].mean() + 100  # the bright half stays


def test_viewing_image_of_a_flat_film_is_black():
    view, _ = viewing_image(np.full(FILM, 1000, np.uint16), 512)
    assert max(view.shape) == 512 and not view.any()


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.float32])
@pytest.mark.parametrize(
    ("shape", "max_side", "dot"),
    [(FILM, 1024, (1234.0, 777.0)), ((2560, 3584), 1024, (3101.0, 2290.0)), ((1200, 900), 1000, (600.0, 1000.0))],
)
def test_viewing_image_scale_maps_a_film_position_onto_the_image(dtype, shape, max_side, dot):
    view, scale = viewing_image(_dot_film(shape, dtype, dot), max_side)
    expected = film_to_image(dot, scale)
    # The dot's centre in the view: the middle of its pixels, weighted by how much brighter than the ground.
    x0, y0 = (int(v) - 8 for v in expected)
    patch = view[y0 : y0 + 17, x0 : x0 + 17].astype(np.float64)
    weights = np.clip(patch - np.median(patch) - 2, 0, None)
    yy, xx = np.mgrid[: patch.shape[0], : patch.shape[1]]
    found = ((xx * weights).sum() / weights.sum() + x0, (yy * weights).sum() / weights.sum() + y0)
    assert found == pytest.approx(tuple(expected), abs=0.35)


def test_viewing_image_refuses_what_is_no_film():
    with pytest.raises(ValueError):
        viewing_image(np.zeros((10, 10, 3), np.uint8), 100)
    with pytest.raises(ValueError):
        viewing_image(np.zeros((0, 10), np.uint8), 100)
    with pytest.raises(ValueError):
        viewing_image(np.zeros((10, 10), np.uint8), 0)


# --- the stored picture -----------------------------------------------------------------------------------------


def test_a_preview_round_trips_through_image_for_overlay():
    film = _dot_film(FILM, np.uint16, (500.0, 600.0))
    view, scale = viewing_image(film, 1024)
    image = film_image(film, "preview", 1024)
    assert image.kind == "preview" and image.scale == scale
    back, back_scale = image_for_overlay(image, 1024)
    assert back_scale == scale and back.shape == view.shape
    # A JPEG of quality 95: within a few grey levels of the viewing image, one on average.
    difference = np.abs(back.astype(int) - view.astype(int))
    assert difference.mean() < 1.0 and difference.max() <= 12
    # A smaller overlay of the same preview: downscaled again, the scales multiplied.
    small, small_scale = image_for_overlay(image, 512)
    assert max(small.shape) == 512 and small_scale == pytest.approx(scale / 2)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_an_original_keeps_the_decoded_pixels_and_round_trips(dtype):
    film = _film((1200, 900), dtype)
    image = film_image(film, "original", 1024)
    assert image.kind == "original" and image.scale == 1.0
    decoded = cv2.imdecode(np.frombuffer(image.encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, film)
    back, scale = image_for_overlay(image, 600)
    expected, expected_scale = viewing_image(film, 600)
    assert scale == expected_scale
    np.testing.assert_array_equal(back, expected)


def test_stored_pictures_carry_no_metadata():
    chunks = _png_chunks(film_image(_film((400, 300)), "original", 256).encoded)
    assert set(chunks) == {b"IHDR", b"IDAT", b"IEND"}
    segments = _jpeg_segments(film_image(_film((400, 300)), "preview", 256).encoded)
    assert not {0xE1, 0xFE} & set(segments)  # no EXIF (APP1), no comment (COM): only JFIF, tables and data


def test_film_image_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        film_image(_film((40, 30)), "thumbnail", 64)  # type: ignore[arg-type]


# --- the overlay ------------------------------------------------------------------------------------------------


def _joint(centre: tuple[float, float], score: int, side: float = 200.0) -> dict:
    probabilities = [0.02] * 6
    probabilities[score] = 0.9
    x, y = centre
    return {
        "score": score,
        "probabilities": probabilities,
        "center": [x, y],
        "box": [x - side / 2, y - side / 2, x + side / 2, y + side / 2],
        "confidence": 0.95,
    }


def _answer() -> dict:
    """A left hand on a 2048 x 2560 film: joints 250 film pixels apart (100 pixels on a 1024-pixel view), grades
    0..5 in turn, and a second hand found but not scored."""
    joints = {}
    for i, name in enumerate(JOINT_NAMES):
        row, column = divmod(i, 5)
        joints[name] = _joint((500.0 + 250.0 * column, 1500.0 - 600.0 * row), i % 6)
    scores = {name: joint["score"] for name, joint in joints.items()}
    hand = {
        "laterality": "L",
        "scores": scores,
        "total": sum(scores.values()),
        "joints": joints,
        "box": [400.0, 800.0, 1600.0, 1600.0],
        "confidence": 0.91,
    }
    answer = {
        **{key: hand[key] for key in ("scores", "total", "laterality", "joints")},
        "body_part": {"label": "left_hand", "probability": 0.99},
        "hands": [hand],
        "hands_not_scored": [
            {"box": [200.0, 1900.0, 1800.0, 2400.0], "error": "joints_not_found", "detail": "No joints."}
        ],
        "orientation": {"rotated_deg": 0},
        "warnings": [],
        "models": {
            "body_part": "body_part@1.0.0",
            "joint_detection": "joint_detection@1.0.0",
            "ratingen_score": "ratingen_score@1.0.0",
        },
        "request_id": "test",
        "notice": RESEARCH_NOTICE,
    }
    ScoreAnswer.model_validate(answer)  # the answer the service gives, field for field
    return answer


def _view() -> tuple[np.ndarray, float]:
    return np.full((1024, 819), BACKGROUND, np.uint8), 0.4


def _drawn_box(joint: dict, scale: float) -> tuple[float, float, float, float]:
    """Where the overlay draws a joint: the middle `JOINT_BOX_SHARE` of its crop, around its centre."""
    cx, cy = film_to_image(joint["center"], scale)
    x0, y0, x1, y1 = joint["box"]
    half = JOINT_BOX_SHARE * (x1 - x0) * scale / 2
    return cx - half, cy - half, cx + half, cy + half


def _edge_middles(box) -> list[tuple[int, int]]:
    x0, y0, x1, y1 = (round(v) for v in box)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    return [(cx, y0), (cx, y1), (x0, cy), (x1, cy)]


def _colour_near(image: np.ndarray, point: tuple[int, int], colour, reach: int = 1, tolerance: int = 12) -> bool:
    x, y = point
    patch = image[y - reach : y + reach + 1, x - reach : x + reach + 1].astype(int)
    return bool((np.abs(patch - np.array(colour)).max(axis=2) <= tolerance).any())


def test_each_joint_box_is_drawn_in_its_grades_colour():
    view, scale = _view()
    answer = _answer()
    picture = draw_overlay(view, scale, answer)
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
    for name, joint in answer["hands"][0]["joints"].items():
        for point in _edge_middles(_drawn_box(joint, scale)):
            assert _colour_near(picture, point, SCORE_COLOURS[joint["score"]]), (name, point)


def test_the_notice_band_is_below_the_film():
    view, scale = _view()
    picture = draw_overlay(view, scale, _answer())
    assert picture.shape[1] == view.shape[1] and picture.shape[0] > view.shape[0] + 20
    np.testing.assert_array_equal(picture[:10, -10:], np.full((10, 10, 3), BACKGROUND))  # the film, untouched there
    band = picture[view.shape[0] :]
    assert (band.max(axis=2) > 100).sum() > 500  # text on black
    assert _colour_near(band, (band.shape[1] // 2, band.shape[0] // 2), (0, 0, 0), reach=band.shape[0] // 2)
    amber = np.abs(band.astype(int) - np.array(NOTICE_COLOUR)).max(axis=2) <= 12
    assert amber[: band.shape[0] // 2].sum() > 100  # the notice's line comes first


def test_a_correction_is_marked_and_an_unchanged_review_is_not():
    view, scale = _view()
    answer = _answer()
    joints = answer["hands"][0]["joints"]
    reviews = {(0, "mcp2"): 4, (0, "mcp3"): joints["mcp3"]["score"]}  # mcp2: 1 -> 4; mcp3 accepted as it is
    plain = draw_overlay(view, scale, answer)
    reviewed = draw_overlay(view, scale, answer, reviews)
    corrected = _drawn_box(joints["mcp2"], scale)
    for point in _edge_middles(corrected):
        assert _colour_near(reviewed, point, SCORE_COLOURS[4]), point
    # Just outside the box edge: a white outline round the corrected joint, the usual dark one elsewhere.
    x0, y0, x1, y1 = (round(v) for v in corrected)
    outside = ((x0 + x1) // 2, y0 - 2)
    assert _colour_near(reviewed, outside, CORRECTION_COLOUR, reach=1, tolerance=40)
    assert not _colour_near(plain, outside, CORRECTION_COLOUR, reach=1, tolerance=40)
    x0, y0, x1, y1 = (round(v) for v in _drawn_box(joints["mcp3"], scale))
    assert _colour_near(reviewed, ((x0 + x1) // 2, y0 - 2), (0, 0, 0), reach=1, tolerance=40)
    # Only the corrected joint and its label differ from the picture without reviews.
    changed = np.argwhere(np.any(plain != reviewed, axis=2))
    assert len(changed) > 0
    assert not np.any(plain[view.shape[0] :] != reviewed[view.shape[0] :])


def test_a_hand_not_scored_is_drawn_dashed_in_grey():
    view, scale = _view()
    picture = draw_overlay(view, scale, _answer())
    x0, _, x1, y1 = (round(v) for v in film_to_image([200.0, 1900.0, 1800.0, 2400.0], scale))
    edge = picture[y1, x0 + 10 : x1 - 10].astype(int)  # the bottom edge: clear of the labels
    grey = np.abs(edge - np.array(NOT_SCORED_COLOUR)).max(axis=1) <= 12
    untouched = np.abs(edge - BACKGROUND).max(axis=1) <= 2
    assert grey.sum() > 0.3 * len(edge) and untouched.sum() > 0.2 * len(edge)


def test_an_overlay_png_is_the_drawn_picture():
    view, scale = _view()
    answer = _answer()
    data = overlay_png(view, scale, answer, {(0, "pip1"): 0})
    assert set(_png_chunks(data)) == {b"IHDR", b"IDAT", b"IEND"}
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, draw_overlay(view, scale, answer, {(0, "pip1"): 0}))


def test_an_overlay_draws_on_a_real_viewing_image_of_any_size():
    """A small preview and a full-size picture, with a film from `viewing_image` under the answer."""
    answer = _answer()
    for max_side in (256, 2560):
        view, scale = viewing_image(_film(), max_side)
        picture = draw_overlay(view, scale, answer)
        assert picture.shape[:2][::-1][0] == view.shape[1] and picture.shape[0] > view.shape[0]
        joint = answer["hands"][0]["joints"]["pip4"]
        assert any(
            _colour_near(picture, p, SCORE_COLOURS[joint["score"]], tolerance=30)
            for p in _edge_middles(_drawn_box(joint, scale))
        )
