"""The ingress without Ray: the HTTP app (`create_app`) over fake async models, and the serve config.

The fakes stand where the deployment handles stand in the service, so these tests run the same routes, upload
handling, pipeline, stage timeouts, error mapping and request ids as the served application, in milliseconds.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import re
import time
from importlib import import_module
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from ray.exceptions import ActorUnavailableError
from ray.serve.exceptions import BackPressureError
from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

from deepxray.api.routes import create_app
from deepxray.api.service import ScoringService
from deepxray.app import build_app
from deepxray.deployments.body_part import BodyPart
from deepxray.deployments.chest_findings import ChestFindings
from deepxray.deployments.common import from_wire, threads_for, to_wire
from deepxray.deployments.ingress import Ingress
from deepxray.deployments.joint_detection import JointDetection
from deepxray.deployments.ratingen_score import RatingenScore
from deepxray.imaging import SUPPORTED_FORMATS, decode_image
from deepxray.imaging.model_inputs import NormalisedImage, body_part_view, detector_view, turn_view
from deepxray.labels import BODY_PARTS, JOINT_NAMES, RATINGEN_CLASSES, RESEARCH_NOTICE
from deepxray.models.registry import MODEL_NAMES
from deepxray.models.runtime import MicroBatcher
from deepxray.pipeline import Timings
from deepxray.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SMALL = (640, 512)  # rows, columns: phantoms small enough to decode and crop in milliseconds


def probabilities(label: str, confidence: float = 0.9) -> np.ndarray:
    """Body-part probabilities with `confidence` on `label`."""
    p = np.full(len(BODY_PARTS), (1.0 - confidence) / (len(BODY_PARTS) - 1), dtype=np.float32)
    p[BODY_PARTS.index(label)] = confidence
    return p


def ratingen(grade: int) -> np.ndarray:
    p = np.full(len(RATINGEN_CLASSES), 0.02, dtype=np.float32)
    p[grade] = 0.9
    return p


class OracleDetector:
    """Finds the joints where the phantom has them, in whichever view (plain or mirrored) it is shown."""

    def __init__(self, data: bytes, centers: dict[str, tuple[float, float]], confidence: float = 0.95):
        image = NormalisedImage.from_pixels(decode_image(data).pixels)
        self.views = {mirrored: detector_view(image, mirrored) for mirrored in (False, True)}
        self.centers = np.array([centers[name] for name in JOINT_NAMES])
        self.confidence = np.full(len(JOINT_NAMES), confidence)
        self.saw_mirrored: list[bool] = []

    async def __call__(self, view: np.ndarray) -> np.ndarray:
        mirrored = bool(np.allclose(view, self.views[True].pixels))
        self.saw_mirrored.append(mirrored)
        xy = self.views[mirrored].to_view(self.centers)
        return np.column_stack([xy, self.confidence]).astype(np.float32)


class TurnedFilmModels:
    """Fakes that see what real models see in a film stored turned: a left hand only when its view is shown
    upright (turned back by `turns` clockwise quarter turns), and the joints where the phantom has them."""

    def __init__(self, data: bytes, centers: dict[str, tuple[float, float]], turns: int):
        image = NormalisedImage.from_pixels(decode_image(data).pixels)
        self.upright_view = turn_view(body_part_view(image), turns)
        self.detector_view = detector_view(image, False, turns)
        self.centers = np.array([centers[name] for name in JOINT_NAMES])

    def body(self, view: np.ndarray) -> np.ndarray:
        return probabilities("left_hand", 0.97) if np.array_equal(view, self.upright_view) else probabilities("chest")

    async def detector(self, view: np.ndarray) -> np.ndarray:
        if not np.array_equal(view, self.detector_view.pixels):  # not upright: nothing found with confidence
            return np.zeros((len(JOINT_NAMES), 3), np.float32)
        return np.column_stack([self.detector_view.to_view(self.centers), np.full(10, 0.95)]).astype(np.float32)


class Tagged:
    """A fake's answer as a model deployment gives it, (output, model tag), awaitable; passes `cancel()` on to
    the fake's own awaitable (the stage cancels a call that ran out of time)."""

    def __init__(self, answer, tag: str):
        self.answer, self.tag = answer, tag

    def __await__(self):
        return self._result().__await__()

    async def _result(self):
        answer = await self.answer if inspect.isawaitable(self.answer) else self.answer
        return answer, self.tag

    def cancel(self):
        getattr(self.answer, "cancel", lambda: None)()


class FakeModels:
    """The ModelBackend of `deepxray.deployments.ingress` with async fakes in place of deployment handles.

    `body`, `detector` and `scorer` take one view or crop; `batch_scorer` (instead of `scorer`) a call's
    stack of crops. `tags`: each model's version tag, or a callable giving the tag of each call."""

    def __init__(self, body=None, detector=None, scorer=None, ready: bool = True, batch_scorer=None, tags=None):
        self.body = body or (lambda view: probabilities("left_hand"))
        self.detector = detector
        self.scorer = scorer or self._constant_score
        self.batch_scorer = batch_scorer
        self.ready = ready
        self.tags = tags or {}
        self.crops_seen = 0
        self.calls_seen: list[int] = []

    def tag(self, name: str) -> str:
        tag = self.tags.get(name, f"{name}@test")
        return tag() if callable(tag) else tag

    async def _constant_score(self, crop: np.ndarray) -> np.ndarray:
        return ratingen(1)

    async def _classify(self, views: np.ndarray) -> np.ndarray:
        assert views.shape[1:] == (128, 128) and views.dtype == np.float32
        answers = [self.body(view) for view in views]
        return np.stack([await answer if asyncio.iscoroutine(answer) else answer for answer in answers])

    def classify(self, views: np.ndarray):
        return Tagged(self._classify(views), self.tag("body_part"))

    def detect(self, view: np.ndarray):
        return Tagged(self.detector(view), self.tag("joint_detection"))

    async def _score(self, crops: np.ndarray) -> list:
        self.crops_seen += len(crops)
        self.calls_seen.append(len(crops))
        if self.batch_scorer is not None:
            return await self.batch_scorer(crops)
        return list(await asyncio.gather(*(self.scorer(crop) for crop in crops)))

    def score(self, crops: np.ndarray):
        return Tagged(self._score(crops), self.tag("ratingen_score"))

    async def info(self) -> dict[str, dict]:
        return {name: {"tag": f"{name}@test", "ready": self.ready} for name in MODEL_NAMES}

    async def cards(self) -> dict[str, dict]:
        return {name: {"name": name, "version": "test", "intended_use": "research use only"} for name in MODEL_NAMES}


def client_for(models: FakeModels, **settings) -> TestClient:
    return TestClient(create_app(ScoringService(models, Settings(**settings))))


def post(client: TestClient, data: bytes, name: str = "upload.png", **kwargs):
    return client.post("/score", files={"xray": (name, data, "application/octet-stream")}, **kwargs)


@pytest.fixture(scope="module")
def left_hand(radiographs):
    data = radiographs.file("left_hand", "png", shape=SMALL)
    return data, radiographs.phantom("left_hand", shape=SMALL)


@pytest.fixture(scope="module")
def right_hand(radiographs):
    data = radiographs.file("right_hand", "png", shape=SMALL)
    return data, radiographs.phantom("right_hand", shape=SMALL)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"].endswith(".")
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# ------------------------------------------------------------------------------------------------ answers


def test_left_hand_gets_the_contract_answer(left_hand):
    data, phantom = left_hand
    models = FakeModels(detector=OracleDetector(data, phantom.centers))
    response = post(client_for(models), data)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert list(answer) == ["scores", "total", "body_part", "laterality", "joints", "hands", "hands_not_scored",
                            "orientation", "warnings", "models", "request_id", "notice"]  # fmt: skip
    assert answer["hands_not_scored"] == []
    (hand,) = answer["hands"]  # one hand: the top level is that hand
    assert {key: hand[key] for key in ("laterality", "scores", "total", "joints")} == {
        key: answer[key] for key in ("laterality", "scores", "total", "joints")
    }
    x0, y0, x1, y1 = hand["box"]
    for joint in hand["joints"].values():
        assert x0 <= joint["box"][0] and joint["box"][2] <= x1 and y0 <= joint["box"][1] and joint["box"][3] <= y1
    assert hand["confidence"] == min(joint["confidence"] for joint in hand["joints"].values())
    assert answer["orientation"] == {"rotated_deg": 0} and answer["warnings"] == []
    assert list(answer["scores"]) == list(JOINT_NAMES)
    assert answer["scores"] == dict.fromkeys(JOINT_NAMES, 1)
    assert answer["total"] == 10
    assert answer["body_part"] == {"label": "left_hand", "probability": 0.9}
    assert answer["laterality"] == "L"
    assert answer["models"] == {name: f"{name}@test" for name in MODEL_NAMES}
    assert answer["notice"] == RESEARCH_NOTICE
    assert answer["request_id"] == response.headers["x-request-id"]
    for name in JOINT_NAMES:
        joint = answer["joints"][name]
        assert set(joint) == {"score", "probabilities", "center", "box", "confidence"}
        assert len(joint["probabilities"]) == len(RATINGEN_CLASSES)
        x0, y0, x1, y1 = joint["box"]
        assert x0 < joint["center"][0] < x1 and y0 < joint["center"][1] < y1
        np.testing.assert_allclose(joint["center"], phantom.centers[name], atol=1.5)
    assert models.detector.saw_mirrored == [False]
    assert models.crops_seen == 10


def test_right_hand_is_mirrored_for_the_models_and_answered_in_the_original_image(right_hand):
    data, phantom = right_hand
    models = FakeModels(
        body=lambda view: probabilities("right_hand", 0.8), detector=OracleDetector(data, phantom.centers)
    )
    answer = post(client_for(models), data).json()
    assert answer["laterality"] == "R"
    assert answer["body_part"]["label"] == "right_hand"
    assert models.detector.saw_mirrored == [True]  # the detector only ever sees left-oriented hands
    for name in JOINT_NAMES:  # ... but the centres are where the joints are in the uploaded image
        np.testing.assert_allclose(answer["joints"][name]["center"], phantom.centers[name], atol=1.5)


def test_jpeg_and_dicom_uploads_are_scored(radiographs):
    for data in (
        radiographs.file("left_hand", "jpeg", shape=SMALL),
        radiographs.file("left_hand", "dicom", shape=SMALL, photometric="MONOCHROME1"),
    ):
        models = FakeModels(detector=OracleDetector(data, radiographs.phantom("left_hand", shape=SMALL).centers))
        response = post(client_for(models), data, name="hand.dcm")
        assert response.status_code == 200, response.text
        assert response.json()["laterality"] == "L"


def test_not_a_hand_is_422_naming_what_was_seen(left_hand):
    client = client_for(FakeModels(body=lambda view: probabilities("chest", 0.87)))
    body = assert_error(post(client, left_hand[0]), 422, "not_a_hand")
    assert "chest" in body["detail"] and "0.87" in body["detail"]
    assert body["body_part"] == {"label": "chest", "probability": 0.87}


def test_a_doubtful_hand_is_422(left_hand):
    client = client_for(FakeModels(body=lambda view: probabilities("left_hand", 0.4)))
    body = assert_error(post(client, left_hand[0]), 422, "not_a_hand")
    assert "not confident" in body["detail"]


def test_low_joint_confidence_is_422(left_hand):
    data, phantom = left_hand
    detector = OracleDetector(data, phantom.centers)
    detector.confidence[[1, 7]] = 0.05
    body = assert_error(post(client_for(FakeModels(detector=detector)), data), 422, "joints_not_found")
    assert body["joints_not_found"] == ["mcp2", "pip3"]
    assert "mcp2" in body["detail"]


def test_confident_joints_that_do_not_form_a_hand_are_422(left_hand):
    data, phantom = left_hand
    pip3, pip4 = JOINT_NAMES.index("pip3"), JOINT_NAMES.index("pip4")
    detector = OracleDetector(data, phantom.centers)
    detector.centers[[pip3, pip4]] = detector.centers[[pip4, pip3]]  # the middle and ring fingers' PIPs swapped
    models = FakeModels(detector=detector)
    body = assert_error(post(client_for(models), data), 422, "implausible_joints")
    assert body["layout_problems"] == ["the PIP joints are not in finger order"]
    assert "do not form a hand" in body["detail"] and body["body_part"]["label"] == "left_hand"
    assert models.crops_seen == 0  # refused before anything is scored


@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_a_film_stored_turned_is_scored_upright_in_the_files_coordinates(left_hand, quarter_turns):
    from deepxray.phantoms.stored import store

    _, phantom = left_hand
    stored = store(phantom, f"turned{90 * quarter_turns}")  # counter-clockwise
    centers = stored.centers
    upload = cv2.imencode(".png", stored.image)[1].tobytes()
    fakes = TurnedFilmModels(upload, centers, turns=quarter_turns)
    answer = post(client_for(FakeModels(body=fakes.body, detector=fakes.detector)), upload).json()
    assert answer["orientation"] == {"rotated_deg": 90 * quarter_turns}, answer
    assert answer["laterality"] == "L" and answer["body_part"]["label"] == "left_hand"
    for name in JOINT_NAMES:
        np.testing.assert_allclose(answer["joints"][name]["center"], centers[name], atol=1.5)


def test_a_film_upright_no_way_is_refused_with_its_reason(left_hand):
    data, phantom = left_hand
    fakes = TurnedFilmModels(data, phantom.centers, turns=0)
    sideways = OracleDetector(data, phantom.centers)
    sideways.centers = sideways.centers @ np.array([[0.0, 1.0], [-1.0, 0.0]]) + [0, 600]  # the hand lying on its side
    body = assert_error(
        post(client_for(FakeModels(body=fakes.body, detector=sideways)), data), 422, "orientation_unclear"
    )
    assert "fingers point" in body["detail"] and body["body_part"]["label"] == "left_hand"


def dicom_of(radiographs, tmp_path, body_part: str = "left_hand", **header) -> bytes:
    from deepxray.phantoms.writers import write_dicom

    path = tmp_path / f"{body_part}.dcm"
    write_dicom(path, radiographs.phantom(body_part, shape=SMALL), "unit", **header)
    return path.read_bytes()


@pytest.mark.parametrize("modality", ["CT", "MR", "NM", "US", "PT"])
def test_a_dicom_of_no_radiograph_modality_is_422_before_any_model(radiographs, tmp_path, modality):
    def no_model(view):
        raise AssertionError("a model was asked")

    client = client_for(FakeModels(body=no_model))
    body = assert_error(
        post(client, dicom_of(radiographs, tmp_path, modality=modality)), 422, "not_radiograph_modality"
    )
    assert body["modality"] == modality and modality in body["detail"]


def test_a_dicom_header_that_disagrees_is_a_warning_and_the_anatomy_wins(radiographs, tmp_path, left_hand):
    data = dicom_of(radiographs, tmp_path, image_laterality="R", body_part_examined="CHEST")
    answer = post(client_for(FakeModels(detector=OracleDetector(data, left_hand[1].centers))), data).json()
    assert answer["laterality"] == "L" and answer["hands"][0]["laterality"] == "L"
    assert len(answer["warnings"]) == 2
    assert "says RIGHT" in answer["warnings"][0] and "left hand" in answer["warnings"][0]
    assert "CHEST" in answer["warnings"][1]
    agreeing = dicom_of(radiographs, tmp_path, image_laterality="L", body_part_examined="HAND")
    answer = post(client_for(FakeModels(detector=OracleDetector(agreeing, left_hand[1].centers))), agreeing).json()
    assert answer["warnings"] == []


# --------------------------------------------------------------------------------------- concurrency, batching


def test_the_ten_crops_reach_the_scorer_concurrently(left_hand):
    data, phantom = left_hand
    in_flight, most = 0, 0

    async def scorer(crop: np.ndarray) -> np.ndarray:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            for _ in range(300):  # a caller awaiting one crop at a time would keep this at 1 (and wait 3 s each)
                if in_flight >= len(JOINT_NAMES):
                    break
                await asyncio.sleep(0.01)
            return ratingen(0)
        finally:
            in_flight -= 1

    service = ScoringService(FakeModels(detector=OracleDetector(data, phantom.centers), scorer=scorer))
    answer = asyncio.run(service.score(data, "concurrency", Timings()))
    assert most == 10
    assert answer["total"] == 0


def test_the_ten_crops_are_scored_in_one_batch(left_hand):
    data, phantom = left_hand
    batches: list[tuple[int, ...]] = []

    def run_batch(crops: np.ndarray) -> np.ndarray:
        batches.append(crops.shape)
        return np.stack([ratingen(2)] * len(crops))

    batcher = MicroBatcher(run_batch)  # the in-process stand-in for @serve.batch

    service = ScoringService(FakeModels(detector=OracleDetector(data, phantom.centers), batch_scorer=batcher))
    answer = asyncio.run(service.score(data, "batching", Timings()))
    assert batches == [(10, 96, 96)]
    assert answer["scores"] == dict.fromkeys(JOINT_NAMES, 2)


@pytest.mark.parametrize("crops_per_call, calls", [(10, [10]), (5, [5, 5]), (1, [1] * 10)])
def test_crops_per_call_sets_how_many_calls_a_hand_costs_and_changes_no_score(left_hand, crops_per_call, calls):
    data, phantom = left_hand

    async def graded(crop: np.ndarray) -> np.ndarray:  # a grade from the crop itself: any mix-up would show
        return ratingen(int(crop.mean() * 100) % 6)

    models = FakeModels(detector=OracleDetector(data, phantom.centers), scorer=graded)
    answer = asyncio.run(ScoringService(models, Settings(crops_per_call=crops_per_call)).score(data, "x", Timings()))
    assert models.calls_seen == calls
    reference = FakeModels(detector=OracleDetector(data, phantom.centers), scorer=graded)
    assert answer == asyncio.run(ScoringService(reference, Settings(crops_per_call=1)).score(data, "x", Timings()))


def test_crops_per_call_larger_than_a_batch_is_refused_when_the_settings_are_read():
    with pytest.raises(ValueError, match="crops_per_call"):
        Settings(crops_per_call=10, max_batch_size=4)


def test_the_answer_names_the_model_versions_that_computed_it(left_hand):
    data, phantom = left_hand
    tags = {"ratingen_score": "ratingen_score@2.0.0"}
    models = FakeModels(detector=OracleDetector(data, phantom.centers), tags=tags)
    answer = post(client_for(models), data).json()
    assert answer["models"] == {
        "body_part": "body_part@test",
        "joint_detection": "joint_detection@test",
        "ratingen_score": "ratingen_score@2.0.0",
    }


def test_a_film_whose_calls_met_two_versions_is_scored_again_and_answered_by_one(left_hand):
    data, phantom = left_hand
    tags = iter(["ratingen_score@1.0.0", "ratingen_score@2.0.0"] + ["ratingen_score@2.0.0"] * 10)
    models = FakeModels(detector=OracleDetector(data, phantom.centers), tags={"ratingen_score": lambda: next(tags)})
    response = post(client_for(models, crops_per_call=5), data)  # two calls: the first film meets both versions
    assert response.status_code == 200, response.text
    assert response.json()["models"]["ratingen_score"] == "ratingen_score@2.0.0"
    assert models.calls_seen == [5, 5, 5, 5]  # scored twice


def test_a_film_that_meets_two_versions_twice_is_a_503_to_retry_never_a_mixed_answer(left_hand):
    data, phantom = left_hand
    tags = itertools.cycle(["ratingen_score@1.0.0", "ratingen_score@2.0.0"])
    models = FakeModels(detector=OracleDetector(data, phantom.centers), tags={"ratingen_score": lambda: next(tags)})
    response = post(client_for(models, crops_per_call=5, retry_after_s=2), data)
    body = assert_error(response, 503, "models_updating")
    assert response.headers["retry-after"] == "2"
    assert "ratingen_score@1.0.0 and ratingen_score@2.0.0" in body["detail"]


def test_scoring_asks_no_model_for_its_version_first(left_hand):
    """The first request after start never waits on a version lookup (which could time out while the models
    are busy): a backend whose status calls never answer still scores."""
    data, phantom = left_hand
    models = FakeModels(detector=OracleDetector(data, phantom.centers))

    async def never():
        await asyncio.sleep(30)

    models.info = never
    start = time.perf_counter()
    response = post(client_for(models), data)
    assert response.status_code == 200, response.text
    assert time.perf_counter() - start < 5


# ------------------------------------------------------------------------------------------- error statuses


def test_empty_file_is_400(bad_files):
    assert_error(post(client_for(FakeModels()), bad_files["empty"]), 400, "empty_file")


def test_truncated_png_is_400(bad_files):
    assert_error(post(client_for(FakeModels()), bad_files["truncated_png"]), 400, "undecodable")


def test_text_file_is_415_listing_the_formats_we_read(bad_files):
    body = assert_error(post(client_for(FakeModels()), bad_files["text"], name="notes.txt"), 415, "unsupported_format")
    for name in SUPPORTED_FORMATS:
        assert name.upper() in body["detail"]


def test_decompression_bomb_is_413(bad_files):
    body = assert_error(post(client_for(FakeModels()), bad_files["bomb_png"]), 413, "too_large")
    assert "megapixels" in body["detail"]


def test_upload_over_the_limit_is_413_before_decoding(left_hand):
    never = FakeModels(body=lambda view: pytest.fail("an oversized upload reached the models"))
    client = client_for(never, max_upload_bytes=4096)
    body = assert_error(post(client, left_hand[0]), 413, "too_large")
    assert "the limit is 4 KiB" in body["detail"]


def test_chunked_upload_over_the_limit_is_413(left_hand):
    """Without a Content-Length the body is counted as it arrives and refused once it passes the limit."""
    boundary = "deepxrayboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="xray"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + left_hand[0]
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def chunks():
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    client = client_for(FakeModels(), max_upload_bytes=100_000)
    response = client.post(
        "/score", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "too_large")


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"files": {"image": ("hand.png", b"\x89PNG....", "image/png")}},  # the wrong field name
        {"data": {"xray": "not a file"}},  # a form field, not a file
        {"content": b"\x89PNG....", "headers": {"content-type": "text/plain"}},  # a body of no type we take
        {},  # nothing at all
    ],
)
def test_missing_upload_field_is_400_in_our_shape(request_kwargs):
    body = assert_error(client_for(FakeModels()).post("/score", **request_kwargs), 400, "missing_file")
    assert "xray" in body["detail"]


@pytest.mark.parametrize("media_type", ["image/png", "image/jpeg", "application/dicom", "application/octet-stream"])
def test_the_film_as_the_body_itself_gets_the_same_answer_as_multipart(left_hand, media_type):
    data, phantom = left_hand
    client = client_for(FakeModels(detector=OracleDetector(data, phantom.centers)))
    multipart = post(client, data, headers={"x-request-id": "same"})
    raw = client.post("/score", content=data, headers={"content-type": media_type, "x-request-id": "same"})
    assert raw.status_code == 200, raw.text
    assert raw.json() == multipart.json()


def test_a_raw_body_keeps_the_error_table(bad_files):
    client = client_for(FakeModels(), max_upload_bytes=100_000)

    def raw(body, media_type="image/png", **headers):
        return client.post("/score", content=body, headers={"content-type": media_type, **headers})

    assert_error(raw(b""), 400, "empty_file")
    assert_error(raw(bad_files["truncated_png"]), 400, "undecodable")
    assert_error(raw(bad_files["text"], "application/octet-stream"), 415, "unsupported_format")
    assert_error(raw(b"\0" * 100_001), 413, "too_large")  # declared length over the limit

    def chunks():  # no length declared: refused as soon as the body passes the limit
        for _ in range(20):
            yield b"\0" * 65536

    response = client.post("/score", content=chunks(), headers={"content-type": "application/octet-stream"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "too_large")


def test_malformed_multipart_is_400():
    response = client_for(FakeModels()).post(
        "/score", content=b"garbage", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] in ("bad_request", "missing_file")
    response = client_for(FakeModels()).post("/score", content=b"--x", headers={"content-type": "multipart/form-data"})
    assert_error(response, 400, "bad_request")


def test_mangled_uploads_never_answer_500(radiographs):
    """Cut, bit-flipped and random files, and broken multipart bodies: always a 4xx in our shape."""
    rng = np.random.default_rng(3)
    originals = [radiographs.file("left_hand", fmt, shape=(320, 256)) for fmt in ("png", "jpeg", "dicom")]
    uploads = [rng.bytes(int(n)) for n in rng.integers(1, 4000, 10)]
    for data in originals:
        for _ in range(8):
            mangled = bytearray(data[: int(rng.integers(1, len(data)))])
            for position in rng.integers(0, len(mangled), 4):
                mangled[position] ^= 0xFF
            uploads.append(bytes(mangled))
    client = client_for(FakeModels(body=lambda view: probabilities("chest")))
    for data in uploads:
        response = post(client, data)
        assert response.status_code in (400, 413, 415, 422), response.text
        assert response.json()["error"]
    for body in (b"--x\r\n\r\n", b"--x\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--x--\r\n", rng.bytes(500)):
        response = client.post("/score", content=body, headers={"content-type": "multipart/form-data; boundary=x"})
        assert response.status_code == 400, response.text


def test_back_pressure_is_503_with_retry_after(left_hand):
    def overloaded(view):
        raise BackPressureError(num_queued_requests=8, max_queued_requests=8, retry_after_s=2.5)

    response = post(client_for(FakeModels(body=overloaded)), left_hand[0])
    body = assert_error(response, 503, "overloaded")
    assert response.headers["retry-after"] == "3"
    assert "queue is full" in body["detail"]

    def overloaded_without_hint(view):
        raise BackPressureError(num_queued_requests=8, max_queued_requests=8)

    response = post(client_for(FakeModels(body=overloaded_without_hint), retry_after_s=4), left_hand[0])
    assert_error(response, 503, "overloaded")
    assert response.headers["retry-after"] == "4"


def test_more_images_than_the_replica_takes_get_a_json_503_at_once(left_hand):
    """One image scoring and one waiting fill the replica: a third gets the API's 503 without waiting, and the
    two admitted ones are answered."""
    data, phantom = left_hand
    release = asyncio.Event()

    async def slow_body(view):
        await release.wait()
        return probabilities("left_hand")

    models = FakeModels(body=slow_body, detector=OracleDetector(data, phantom.centers))
    app = create_app(ScoringService(models, Settings(max_scoring=1, max_waiting=1, retry_after_s=2)))

    async def three_uploads():
        import httpx

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:

            def upload():
                return client.post("/score", files={"xray": ("hand.png", data, "application/octet-stream")})

            admitted = [asyncio.ensure_future(upload()) for _ in range(2)]
            await asyncio.sleep(0.5)  # both are inside: one at the body-part model, one waiting for its slot
            start = time.perf_counter()
            refused = await upload()
            refused_after = time.perf_counter() - start
            release.set()
            return refused, refused_after, await asyncio.gather(*admitted)

    refused, refused_after, admitted = asyncio.run(three_uploads())
    body = assert_error(refused, 503, "overloaded")
    assert refused.headers["retry-after"] == "2"
    assert "capacity" in body["detail"]
    assert refused_after < 1.0
    assert [r.status_code for r in admitted] == [200, 200]


def test_a_restarting_model_is_503_with_retry_after(left_hand):
    def restarting(view):
        raise ActorUnavailableError("the replica is restarting", None)

    response = post(client_for(FakeModels(body=restarting)), left_hand[0])
    assert_error(response, 503, "overloaded")
    assert response.headers["retry-after"] == "1"


class NeverAnswers:
    """Stands for a DeploymentResponse that never resolves; records that the stage cancelled it."""

    def __init__(self):
        self.cancelled = False

    def __await__(self):
        return asyncio.sleep(30).__await__()

    def cancel(self):
        self.cancelled = True


def test_a_stage_that_does_not_answer_in_time_is_504(left_hand):
    data, phantom = left_hand
    pending = NeverAnswers()
    models = FakeModels(detector=lambda view: pending)
    start = time.perf_counter()
    body = assert_error(post(client_for(models, stage_timeout_s=0.2), data), 504, "stage_timeout")
    assert time.perf_counter() - start < 5
    assert "joint-detection" in body["detail"]
    assert pending.cancelled


def test_an_unexpected_failure_is_a_500_in_our_shape_with_a_request_id(left_hand, caplog):
    data, phantom = left_hand

    def broken(crop):
        message = "-".join(("secret", "detail"))  # stands for a message quoting data; the source line does not
        raise RuntimeError(message)

    models = FakeModels(detector=OracleDetector(data, phantom.centers), scorer=broken)
    with caplog.at_level(logging.INFO, logger="ray.serve.deepxray"):
        response = post(client_for(models), data)
    body = assert_error(response, 500, "internal_error")
    assert body["request_id"] in body["detail"]
    assert "secret-detail" not in response.text and "secret-detail" not in caplog.text
    assert "RuntimeError" in caplog.text and body["request_id"] in caplog.text


def test_unknown_routes_answer_json():
    client = client_for(FakeModels())
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.get("/score"), 405, "method_not_allowed")


# ------------------------------------------------------------------------------------ request ids and logs


def test_request_id_is_the_clients_when_it_is_a_plain_token(left_hand):
    data, phantom = left_hand
    client = client_for(FakeModels(detector=OracleDetector(data, phantom.centers)))
    response = post(client, data, headers={"X-Request-ID": "ticket-42.a"})
    assert response.headers["x-request-id"] == "ticket-42.a" == response.json()["request_id"]
    response = post(client, data, headers={"X-Request-ID": "no spaces; or\tanything else"})
    request_id = response.json()["request_id"]
    assert response.headers["x-request-id"] == request_id and len(request_id) == 32  # uuid4 hex
    assert len({client.get("/healthz").headers["x-request-id"] for _ in range(3)}) == 3


def test_logs_hold_status_sizes_and_timings_but_not_the_file(left_hand, caplog, bad_files):
    data, phantom = left_hand
    client = client_for(FakeModels(detector=OracleDetector(data, phantom.centers)))
    with caplog.at_level(logging.INFO, logger="ray.serve.deepxray"):
        ok = post(client, data, name="Doe_Jane_1970-01-01.png")
        bad = post(client, bad_files["text"], name="Doe_Jane_notes.txt")
    messages = [r.getMessage() for r in caplog.records if r.name == "ray.serve.deepxray"]
    lines = [message for message in messages if message.startswith("score ")]
    assert len(lines) == 2
    assert f"request_id={ok.json()['request_id']} status=200 bytes={len(data)}" in lines[0]
    assert "total_ms=" in lines[0] and "decode_ms=" in lines[0]
    assert f"request_id={bad.json()['request_id']} status=415" in lines[1]
    audit = [message for message in messages if message.startswith("audit ")]  # and one audit line each
    assert [line.split()[1] for line in audit] == [f"request_id={ok.json()['request_id']}",
                                                   f"request_id={bad.json()['request_id']}"]  # fmt: skip
    assert "Doe" not in caplog.text and "Patient notes" not in caplog.text


# -------------------------------------------------------------------------------------- health and models


def test_health_readiness_models_and_docs():
    client = client_for(FakeModels())
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"] == {name: {"tag": f"{name}@test", "ready": True} for name in MODEL_NAMES}
    cards = client.get("/v1/models").json()["models"]
    assert set(cards) == set(MODEL_NAMES)
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    upload = schema["paths"]["/score"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["required"] == ["xray"]
    assert {"400", "413", "415", "422", "503", "504"} <= set(schema["paths"]["/score"]["post"]["responses"])


def test_docs_need_no_outside_address():
    """/docs and /redoc load their scripts and styles from the service itself: they render without internet."""
    client = client_for(FakeModels())
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        assert re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}", html.text) == [], page
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
        assert len(assets) >= 2, page
        for asset in assets:
            assert asset.startswith("/"), asset
            assert client.get(asset).status_code == 200, asset
    assert "validatorUrl" in client.get("/docs").text  # no badge fetched from an outside validator


def _schema_of(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in node:  # optional fields: the non-null branch
        node = next(branch for branch in node["anyOf"] if branch.get("type") != "null")
        return _schema_of(schema, node)
    return node


def _undocumented(schema: dict, node: dict, value, path: str) -> list[str]:
    """Paths in `value` that the OpenAPI `node` does not describe."""
    node = _schema_of(schema, node)
    if isinstance(value, dict):
        if "properties" in node:
            missing = [f"{path}.{key}" for key in value if key not in node["properties"]]
            return missing + [
                problem
                for key, item in value.items()
                if key in node["properties"]
                for problem in _undocumented(schema, node["properties"][key], item, f"{path}.{key}")
            ]
        if isinstance(node.get("additionalProperties"), dict):
            return [
                p
                for key, item in value.items()
                for p in _undocumented(schema, node["additionalProperties"], item, f"{path}.{key}")
            ]
        return [] if node.get("type") == "object" else [path]
    return []


def test_openapi_describes_every_field_of_the_answers(left_hand, radiographs):
    data, phantom = left_hand
    client = client_for(FakeModels(detector=OracleDetector(data, phantom.centers)))
    schema = client.get("/openapi.json").json()
    responses = schema["paths"]["/score"]["post"]["responses"]
    answer = post(client, data).json()
    assert (
        answer["scores"]
        and _undocumented(schema, responses["200"]["content"]["application/json"]["schema"], answer, "") == []
    )
    refused = post(client_for(FakeModels(body=lambda view: probabilities("chest"))), data).json()
    assert refused["body_part"]["label"] == "chest"
    assert _undocumented(schema, responses["422"]["content"]["application/json"]["schema"], refused, "") == []
    # The check itself notices a field the schema does not name.
    assert _undocumented(
        schema, responses["200"]["content"]["application/json"]["schema"], {**answer, "extra": 1}, ""
    ) == [".extra"]


def test_readiness_is_503_until_every_model_is_ready():
    assert_error(client_for(FakeModels(ready=False)).get("/readyz"), 503, "not_ready")

    async def unreachable():
        raise BackPressureError(num_queued_requests=1, max_queued_requests=1)

    models = FakeModels()
    models.info = unreachable
    assert_error(client_for(models).get("/readyz"), 503, "not_ready")


# ------------------------------------------------------------------------------ wire format, config, builder


def test_arrays_cross_as_float16_and_come_back_as_float32():
    view = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    wire = to_wire(view)
    assert wire.dtype == np.float16 and wire.nbytes == view.nbytes // 2
    back = from_wire(wire)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, view, atol=2**-11)


def test_threads_follow_the_cpu_share():
    assert [threads_for(cpus) for cpus in (0.2, 0.5, 1.0, 1.6, 4.0)] == [1, 1, 1, 2, 4]


def serve_config() -> dict:
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text(encoding="utf-8"))


def test_serve_config_is_valid_for_ray_and_builds_the_app():
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.deployment import Application

    config = serve_config()
    schema = ServeDeploySchema.model_validate(config)
    assert schema.http_options.host == "127.0.0.1" and schema.http_options.port == 8000
    (application,) = schema.applications
    assert isinstance(application, ServeApplicationSchema)
    assert application.import_path == "deepxray.app:build_app"
    # What `serve run` / `serve deploy` do with the file: import the builder, turn `args` into its typed argument.
    builder = import_module("deepxray.app").build_app
    assert isinstance(call_user_app_builder_with_args_if_necessary(builder, application.args), Application)
    assert Settings.model_validate(application.args).max_upload_bytes == 64 * 2**20

    written = {deployment["name"]: deployment for deployment in config["applications"][0]["deployments"]}
    assert set(written) == {"Ingress", "BodyPart", "JointDetection", "RatingenScore", "ChestFindings"}
    total_cpus = 0.0
    for deployment in (Ingress, BodyPart, JointDetection, RatingenScore, ChestFindings):
        profile = written[deployment.name]
        for key in ("num_replicas", "max_ongoing_requests", "max_queued_requests"):
            # Written out, and the same in the decorators, so `serve run deepxray.app:graph` behaves like the file.
            assert getattr(deployment, key) == profile[key], (deployment.name, key)
        assert deployment.ray_actor_options == profile["ray_actor_options"], deployment.name
        total_cpus += profile["num_replicas"] * profile["ray_actor_options"]["num_cpus"]
    assert total_cpus <= 2.0  # the one-machine profile fits two cores
    batching = written["RatingenScore"]["user_config"]
    assert set(batching) == {"max_batch_size", "batch_wait_timeout_s"}
    assert written["RatingenScore"]["max_ongoing_requests"] >= batching["max_batch_size"]
    assert written["Ingress"]["backpressure_config"]["retry_after_s"] >= 1


def test_graph_is_a_bound_application():
    from ray.serve.deployment import Application

    from deepxray.app import graph

    assert isinstance(graph, Application)


def test_settings_come_from_the_config_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPXRAY_MAX_UPLOAD_BYTES", "1234")
    monkeypatch.setenv("DEEPXRAY_STAGE_TIMEOUT_S", "2.5")
    # As Ray's typed builder hands them over: the config's args validated without the environment.
    given = Settings.model_validate({"stage_timeout_s": 7, "models_dir": str(tmp_path)})
    args = Settings.with_environment(given)
    assert args.max_upload_bytes == 1234 and args.stage_timeout_s == 7
    assert args.model_dir("joint_detection") == tmp_path / "joint_detection"
    assert Settings(ratingen_score_model="x").model_dir("ratingen_score") == Path("x").resolve()
    assert Settings().model_dir("body_part") is None  # resolved by the replica: the shipped models
    settings = Settings(accept_probability=0.7)
    assert settings.accept_probability == 0.7 and settings.max_upload_bytes == 1234
    with pytest.raises(ValueError):
        Settings.model_validate({"no_such_argument": 1})
    assert build_app({"max_pixels": 1000}) is not None  # called with a plain dict, as `serve run ... key=value` does
    assert Settings().models_folder() == ROOT / "models"  # unset: the shipped models
    monkeypatch.setenv("DEEPXRAY_MODELS_DIR", str(tmp_path))  # the one variable for the model folder
    assert Settings().model_dir("body_part") == tmp_path / "body_part"
    assert Settings().models_folder() == tmp_path.resolve()


def test_importing_the_app_does_not_load_tensorflow():
    import subprocess
    import sys

    code = "import sys, deepxray.app; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.stdout.strip() == "False", result.stderr[-2000:]
