"""The review API without Ray: `create_app` over fake models (tests/test_serving_unit.py's) and a SQLite case
store in a temporary folder. Statuses, scopes, the reviewer, pictures, and what is never stored."""

from __future__ import annotations

import base64
import io

import cv2
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from test_serving_unit import SMALL, FakeModels, OracleDetector, assert_error, post, ratingen

from deepxray.api.keys import add_key
from deepxray.api.routes import create_app
from deepxray.api.service import ScoringService
from deepxray.batch.context import pseudonym
from deepxray.labels import JOINT_NAMES
from deepxray.settings import Settings

SALT = "registry-secret"


class EmbeddingScorer:
    """A scorer that gives every crop grade 1 and an embedding of the crop's mean (so joints differ)."""

    async def __call__(self, crop: np.ndarray):
        embedding = np.array([crop.mean(), crop.std(), 1.0], np.float32)
        return ratingen(1), embedding


@pytest.fixture(scope="module")
def film(radiographs):
    """A small left-hand phantom as DICOM, its header naming a patient and a study (as an archive's would)."""
    data = radiographs.file("left_hand", "dicom", shape=SMALL)
    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.PatientName, dataset.PatientID = "Doe^Jane", "PID-778899"
    dataset.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.77"
    out = io.BytesIO()
    dataset.save_as(out)
    centers = radiographs.phantom("left_hand", shape=SMALL).centers
    return out.getvalue(), centers


def models_for(film) -> FakeModels:
    data, centers = film
    return FakeModels(detector=OracleDetector(data, centers), scorer=EmbeddingScorer())


@pytest.fixture
def keys(tmp_path):
    path = tmp_path / "keys.txt"
    return (
        path,
        add_key(path, "dr-meyer", frozenset({"score", "read", "review"})),
        add_key(path, "lab-a", frozenset({"read"})),
    )


def keeping_client(film, tmp_path, keys, **settings) -> TestClient:
    path, _, _ = keys
    settings = Settings(store_cases=True, data_dir=tmp_path / "data", auth_mode="api_key", api_keys_file=path,
                        pseudonym_salt=SALT, **settings)  # fmt: skip
    return TestClient(create_app(ScoringService(models_for(film), settings)))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_the_store_the_answer_is_unchanged_and_the_case_routes_say_so(film):
    client = TestClient(create_app(ScoringService(models_for(film), Settings())))
    answer = post(client, film[0]).json()
    assert "case_id" not in answer and "overlay" not in answer
    pictured = post(client, film[0], params={"overlay": "true"}).json()
    assert "case_id" not in pictured and pictured["overlay"]["media_type"] == "image/png"
    png = cv2.imdecode(np.frombuffer(base64.b64decode(pictured["overlay"]["base64"]), np.uint8), cv2.IMREAD_COLOR)
    assert png.shape[0] >= SMALL[0] and png.shape[1] == SMALL[1]  # the film at its size, the notice band below
    for method, path in [("GET", "/v1/cases"), ("GET", "/v1/cases/abc"), ("DELETE", "/v1/cases/abc")]:
        assert_error(client.request(method, path), 404, "cases_not_kept")


def test_a_kept_case_is_read_back_with_pseudonyms_only(film, tmp_path, keys):
    _, reviewer, reader = keys
    client = keeping_client(film, tmp_path, keys)
    answer = post(client, film[0], headers=bearer(reviewer)).json()
    case = client.get(f"/v1/cases/{answer['case_id']}", headers=bearer(reader)).json()
    assert case["answer"] == answer and case["image"] == "preview" and not case["reviewed"]
    assert [j["joint"] for j in case["joints"]] == list(JOINT_NAMES)
    from deepxray.cases.store import CaseStore

    with CaseStore.open(Settings(data_dir=tmp_path / "data").case_store_url()) as store:
        stored = store.get(answer["case_id"])
    assert stored.study_id == pseudonym("1.2.826.0.1.3680043.2.1125.77", SALT)
    # Nothing of the DICOM header but the pseudonyms: the database files hold no name, id or UID.
    written = b"".join(path.read_bytes() for path in (tmp_path / "data").iterdir())
    for secret in (b"Doe^Jane", b"PID-778899", b"1.2.826.0.1.3680043.2.1125.77"):
        assert secret not in written


def test_reviews_need_the_review_scope_and_record_who_reviewed(film, tmp_path, keys):
    _, reviewer, reader = keys
    client = keeping_client(film, tmp_path, keys)
    case_id = post(client, film[0], headers=bearer(reviewer)).json()["case_id"]
    body = {"joints": [{"joint": "pip3", "decision": "corrected", "score": 4, "comment": "cortical break"}]}
    assert_error(client.put(f"/v1/cases/{case_id}/review", json=body), 401, "missing_credential")
    assert_error(
        client.put(f"/v1/cases/{case_id}/review", json=body, headers=bearer(reader)), 403, "insufficient_scope"
    )
    assert_error(client.delete(f"/v1/cases/{case_id}", headers=bearer(reader)), 403, "insufficient_scope")
    case = client.put(f"/v1/cases/{case_id}/review", json=body, headers=bearer(reviewer)).json()
    pip3 = next(j for j in case["joints"] if j["joint"] == "pip3")
    assert pip3["score"] == 1 and pip3["review"]["score"] == 4 and pip3["review"]["reviewer"] == "dr-meyer"
    assert case["reviewed"] and case["reviewer"] == "dr-meyer"
    # Accepting later keeps the correction in the history.
    accept = {"joints": [{"joint": "pip3", "decision": "accepted"}]}
    case = client.put(f"/v1/cases/{case_id}/review", json=accept, headers=bearer(reviewer)).json()
    assert [(e["decision"], e["score"]) for e in case["history"]] == [("corrected", 4), ("accepted", 1)]


@pytest.mark.parametrize(
    ("joint", "status", "code"),
    [
        ({"hand": 1, "joint": "mcp2", "decision": "accepted"}, 422, "invalid_review"),  # the film has one hand
        ({"joint": "mcp2", "decision": "corrected"}, 422, "invalid_review"),  # corrected without a score
        ({"joint": "mcp2", "decision": "corrected", "score": 7}, 400, "bad_request"),
        ({"joint": "dip2", "decision": "accepted"}, 400, "bad_request"),
    ],
)
def test_a_review_that_does_not_fit_the_case_is_refused_and_changes_nothing(film, tmp_path, keys, joint, status, code):
    _, reviewer, _ = keys
    client = keeping_client(film, tmp_path, keys)
    case_id = post(client, film[0], headers=bearer(reviewer)).json()["case_id"]
    assert_error(
        client.put(f"/v1/cases/{case_id}/review", json={"joints": [joint]}, headers=bearer(reviewer)), status, code
    )
    assert client.get(f"/v1/cases/{case_id}", headers=bearer(reviewer)).json()["history"] == []


def test_an_unknown_case_is_404_on_every_route(film, tmp_path, keys):
    _, reviewer, _ = keys
    client = keeping_client(film, tmp_path, keys)
    missing = "0" * 32
    review = {"joints": [{"joint": "mcp2", "decision": "accepted"}]}
    for method, path, kwargs in [
        ("GET", f"/v1/cases/{missing}", {}),
        ("GET", f"/v1/cases/{missing}/overlay.png", {}),
        ("GET", f"/v1/cases/{missing}/similar?joint=mcp2", {}),
        ("PUT", f"/v1/cases/{missing}/review", {"json": review}),
        ("DELETE", f"/v1/cases/{missing}", {}),
    ]:
        assert_error(client.request(method, path, headers=bearer(reviewer), **kwargs), 404, "case_not_found")


def test_cases_list_filters_and_pages(film, tmp_path, keys):
    _, reviewer, _ = keys
    client = keeping_client(film, tmp_path, keys)
    ids = [post(client, film[0], headers=bearer(reviewer)).json()["case_id"] for _ in range(3)]
    client.put(f"/v1/cases/{ids[0]}/review", json={"joints": [{"joint": "mcp1", "decision": "accepted"}]},
               headers=bearer(reviewer))  # fmt: skip
    listed = client.get("/v1/cases", params={"limit": 2}, headers=bearer(reviewer)).json()
    assert listed["total"] == 3 and [c["case_id"] for c in listed["cases"]] == ids[::-1][:2]  # newest first
    unreviewed = client.get("/v1/cases", params={"reviewed": "false"}, headers=bearer(reviewer)).json()
    assert {c["case_id"] for c in unreviewed["cases"]} == set(ids[1:])
    by_model = client.get("/v1/cases", params={"model": "ratingen_score@other"}, headers=bearer(reviewer)).json()
    assert by_model["total"] == 0


def test_similar_joints_come_from_other_cases(film, tmp_path, keys):
    _, reviewer, _ = keys
    client = keeping_client(film, tmp_path, keys)
    first, second = (post(client, film[0], headers=bearer(reviewer)).json()["case_id"] for _ in range(2))
    found = client.get(f"/v1/cases/{first}/similar", params={"joint": "mcp3", "k": 3}, headers=bearer(reviewer))
    assert found.status_code == 200, found.text
    similar = found.json()["similar"]
    # The same film twice: its own mcp3 in the other case is the nearest, identical.
    assert similar[0]["case_id"] == second and similar[0]["joint"] == "mcp3"
    assert similar[0]["similarity"] == pytest.approx(1.0, abs=1e-3)
    assert all(s["case_id"] == second for s in similar) and len(similar) == 3


def test_a_case_kept_without_a_picture_has_no_overlay(film, tmp_path, keys):
    _, reviewer, _ = keys
    client = keeping_client(film, tmp_path, keys, store_images="none")
    case_id = post(client, film[0], headers=bearer(reviewer)).json()["case_id"]
    assert client.get(f"/v1/cases/{case_id}", headers=bearer(reviewer)).json()["image"] is None
    assert_error(client.get(f"/v1/cases/{case_id}/overlay.png", headers=bearer(reviewer)), 404, "no_image")


def test_the_overlay_of_a_case_is_a_png_and_deleting_removes_the_case(film, tmp_path, keys):
    _, reviewer, _ = keys
    client = keeping_client(film, tmp_path, keys)
    case_id = post(client, film[0], headers=bearer(reviewer)).json()["case_id"]
    picture = client.get(f"/v1/cases/{case_id}/overlay.png", headers=bearer(reviewer))
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert cv2.imdecode(np.frombuffer(picture.content, np.uint8), cv2.IMREAD_COLOR) is not None
    assert client.delete(f"/v1/cases/{case_id}", headers=bearer(reviewer)).json()["deleted"] == case_id
    assert_error(client.get(f"/v1/cases/{case_id}", headers=bearer(reviewer)), 404, "case_not_found")


def test_the_review_page_and_its_scripts_are_served_from_the_package(film):
    client = TestClient(create_app(ScoringService(models_for(film), Settings())))
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Research use only" in page.text
    for source in ("/static/app.js", "/static/style.css"):
        assert source in page.text and client.get(source).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # nothing loaded from elsewhere
