"""`POST /analyze` without Ray: the body-part gate routes hands to the `/score` answer and chests to the
chest-findings model (fakes from tests/test_serving_unit.py, and a fake chest model whose maps peak where the test
says); every other film is refused as `/score` refuses it."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_serving_unit import SMALL, FakeModels, OracleDetector, Tagged, assert_error, post, probabilities

from deepxray.api.routes import create_app
from deepxray.api.schemas import ChestAnswer
from deepxray.api.service import ScoringService
from deepxray.imaging import decode_image
from deepxray.imaging.model_inputs import CHEST_VIEW, NormalisedImage, chest_view
from deepxray.labels import CHEST_FINDINGS, RESEARCH_NOTICE
from deepxray.settings import Settings

CHEST_TAG = "chest_findings@test"
# Positive: Cardiomegaly (0.9 >= 0.5) and Pleural Effusion (0.7 >= 0.6); Pneumonia has no threshold (not drawn).
PROBABILITIES = {"Cardiomegaly": 0.9, "Pleural Effusion": 0.7, "Pneumonia": 0.95, "Edema": 0.3}
THRESHOLDS = {label: (None if label == "Pneumonia" else 0.6 if label == "Pleural Effusion" else 0.5)
              for label in CHEST_FINDINGS}  # fmt: skip
PEAK_CELL = (20, 8)  # (x, y) cell of the 32 x 32 maps where every map peaks


class FakeChest(FakeModels):
    """FakeModels with a chest-findings model: fixed probabilities, maps that peak at PEAK_CELL."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.views_seen: list[np.ndarray] = []

    async def _analyze(self, view: np.ndarray) -> dict:
        self.views_seen.append(view)
        heatmaps = np.zeros((len(CHEST_FINDINGS), 32, 32), np.float32)
        heatmaps[:, PEAK_CELL[1], PEAK_CELL[0]] = 5.0
        return {
            "probabilities": np.array([PROBABILITIES.get(label, 0.1) for label in CHEST_FINDINGS], np.float32),
            "thresholds": [THRESHOLDS[label] for label in CHEST_FINDINGS],
            "heatmaps": heatmaps,
        }

    def analyze_chest(self, view: np.ndarray):
        return Tagged(self._analyze(view), CHEST_TAG)


def client_for(models, **settings) -> TestClient:
    return TestClient(create_app(ScoringService(models, Settings(**settings))))


@pytest.fixture(scope="module")
def chest_film(radiographs):
    return radiographs.file("chest", "png", shape=SMALL)


def test_a_hand_gets_the_score_answer(radiographs):
    data = radiographs.file("left_hand", "png", shape=SMALL)
    models = FakeChest(detector=OracleDetector(data, radiographs.phantom("left_hand", shape=SMALL).centers))
    client = client_for(models)
    analyzed = client.post("/analyze", files={"xray": ("hand.png", data)}, headers={"x-request-id": "same"})
    scored = post(client, data, headers={"x-request-id": "same"})
    assert analyzed.status_code == 200, analyzed.text
    assert analyzed.json() == scored.json()
    assert models.views_seen == []  # the chest model never saw the hand


def test_a_chest_gets_its_findings_thresholds_and_heatmaps(chest_film):
    models = FakeChest(body=lambda view: probabilities("chest", 0.97))
    response = client_for(models).post("/analyze", content=chest_film, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    answer = response.json()
    ChestAnswer.model_validate(answer)
    assert [finding["label"] for finding in answer["findings"]] == list(CHEST_FINDINGS)
    assert answer["positive"] == ["Cardiomegaly", "Pleural Effusion"]  # Pneumonia: 0.95, but not reported
    assert set(answer["heatmaps"]) == {"Cardiomegaly", "Pleural Effusion"}
    assert answer["body_part"] == {"label": "chest", "probability": 0.97}
    assert answer["models"] == {"body_part": "body_part@test", "chest_findings": CHEST_TAG}
    assert answer["notice"] == RESEARCH_NOTICE
    # The model saw the film as chest_view makes it, and the peak comes back in the film's pixels.
    view = chest_view(NormalisedImage.from_pixels(decode_image(chest_film).pixels))
    np.testing.assert_allclose(models.views_seen[0], view.pixels, atol=1e-3)
    heatmap = answer["heatmaps"]["Cardiomegaly"]
    stride = CHEST_VIEW / 32
    expected = view.to_image(np.array([(PEAK_CELL[0] + 0.5) * stride - 0.5, (PEAK_CELL[1] + 0.5) * stride - 0.5]))
    assert np.hypot(*(np.array(heatmap["peak"]) - expected)) <= 2 * stride / view.transform.scale_x
    grid = np.array(heatmap["grid"])
    assert grid.shape == (16, 16) and grid.max() == 1.0
    assert np.unravel_index(grid.argmax(), grid.shape) == (PEAK_CELL[1] // 2, PEAK_CELL[0] // 2)
    height, width = decode_image(chest_film).pixels.shape
    x0, y0, x1, y1 = heatmap["box"]
    assert x0 <= 0 and y0 <= 0 and x1 >= width - 1 and y1 >= height - 1  # the grid covers the whole film


@pytest.mark.parametrize("label", ["foot", "other_radiograph", "not_radiograph"])
def test_other_body_parts_are_refused_as_score_refuses_them(chest_film, label):
    models = FakeChest(body=lambda view: probabilities(label, 0.9))
    client = client_for(models)
    analyzed = assert_error(client.post("/analyze", files={"xray": ("film.png", chest_film)}), 422, "not_a_hand")
    scored = assert_error(post(client, chest_film), 422, "not_a_hand")
    assert analyzed["detail"] == scored["detail"]
    assert models.views_seen == []


def test_a_chest_the_gate_is_unsure_of_is_refused(chest_film):
    models = FakeChest(body=lambda view: probabilities("chest", 0.4))
    body = assert_error(client_for(models).post("/analyze", files={"xray": ("c.png", chest_film)}), 422, "not_a_hand")
    assert "chest" in body["detail"]
    assert models.views_seen == []


def test_a_service_without_the_chest_model_refuses_chests_as_score_does(chest_film):
    models = FakeModels(body=lambda view: probabilities("chest", 0.97))
    assert_error(client_for(models).post("/analyze", files={"xray": ("c.png", chest_film)}), 422, "not_a_hand")


def test_score_still_refuses_a_chest(chest_film):
    assert_error(post(client_for(FakeChest(body=lambda view: probabilities("chest", 0.97))), chest_film), 422,
                 "not_a_hand")  # fmt: skip
