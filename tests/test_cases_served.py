"""The clinician-review loop through the real application on Ray Serve, on SQLite and on PostgreSQL.

Five phantom films are scored over HTTP by an ingress that keeps cases (an extra ingress over the module's model
deployments, so the scorer's embeddings cross Ray as they do in production), read back, two of them reviewed (one
corrected), the reviewed cases exported as a training manifest, and the scorer trained one epoch on it with
`deepxray train ratingen_score --data ... --epochs 1`, and the shipped models evaluated against the reviewers
(`deepxray evaluate --data ...`). The store is a SQLite file, then a real PostgreSQL server
started for the test session (`tests/postgres.py`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys

import cv2
import httpx
import numpy as np
import pytest
from postgres import postgres_server

from deepxray.api.keys import add_key
from deepxray.cli import main as deepxray
from deepxray.deployments.ingress import Ingress
from deepxray.labels import JOINT_NAMES, RESEARCH_NOTICE
from deepxray.settings import Settings
from loadtests.harness import APP, wait_ready

pytestmark = [pytest.mark.serve, pytest.mark.slow]

DEPLOYMENTS = ("BodyPart", "JointDetection", "RatingenScore")
FILMS = 5


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> list[bytes]:
    """Five phantoms: three left hands, a right hand and a film of both hands (six hands in all)."""
    folder = tmp_path_factory.mktemp("films")
    body_parts = "left_hand:3,right_hand:1,both_hands:1"
    assert deepxray(["phantoms", "generate", "--n", str(FILMS), "--out", str(folder), "--seed", "41",
                     "--body-parts", body_parts, "--distribution", "balanced"]) == 0  # fmt: skip
    return [path.read_bytes() for path in sorted(folder.glob("*.png"))]


@pytest.fixture(scope="module")
def client(serve_app):
    with httpx.Client(base_url=serve_app, timeout=120) as client:
        yield client


def keeping_ingress(name: str, settings: Settings) -> str:
    """An ingress with `settings` over the module application's model deployments, at `/name`."""
    from ray import serve

    handles = [serve.get_deployment_handle(deployment, app_name=APP) for deployment in DEPLOYMENTS]
    ingress = Ingress.options(name=f"{name.capitalize()}Ingress", ray_actor_options={"num_cpus": 0.05})
    serve.run(ingress.bind(*handles, settings=settings), name=name, route_prefix=f"/{name}", blocking=False)
    return f"/{name}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request, serve_app, tmp_path_factory):
    """(route prefix, database URL, the reviewer's key, a read-only key) of an ingress keeping cases."""
    from ray import serve

    folder = tmp_path_factory.mktemp(f"store-{request.param}")
    keys = folder / "api_keys.txt"
    reviewer = add_key(keys, "dr-meyer", frozenset({"score", "read", "review"}))
    reader = add_key(keys, "lab-a", frozenset({"read"}))
    sqlite = contextlib.nullcontext(f"sqlite:///{folder / 'data' / 'cases.sqlite'}")
    with postgres_server() if request.param == "postgresql" else sqlite as url:
        settings = Settings(store_cases=True, database_url=url, auth_mode="api_key", api_keys_file=keys)
        prefix = keeping_ingress(request.param, settings)
        wait_ready(serve_app + prefix, 120)
        try:
            yield prefix, url, reviewer, reader
        finally:
            serve.delete(request.param)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_service_without_the_store_says_it_keeps_no_cases(client):
    response = client.get("/v1/cases")
    assert response.status_code == 404
    assert response.json()["error"] == "cases_not_kept"
    assert "store_cases" in response.json()["detail"]


def test_scored_films_are_kept_reviewed_exported_and_trained_on(client, store, films, tmp_path):
    prefix, url, reviewer, reader = store
    headers = bearer(reviewer)

    answers = []
    for index, film in enumerate(films):
        # One with the picture in the answer: the same case is kept either way.
        params = {"overlay": "true"} if index == 0 else {}
        response = client.post(f"{prefix}/score", files={"xray": ("film.png", film)}, headers=headers, params=params)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert all(len(answer["case_id"]) == 32 for answer in answers)
    overlay = answers[0].pop("overlay")
    picture = cv2.imdecode(np.frombuffer(base64.b64decode(overlay["base64"]), np.uint8), cv2.IMREAD_UNCHANGED)
    # The film downscaled to preview_max_side (its longest side, the height), the notice band below it.
    assert overlay["media_type"] == "image/png" and picture.shape[1] < picture.shape[0]
    assert picture.shape[1] <= Settings().preview_max_side

    # Read back: every case, unreviewed, with the answer as the client got it.
    listed = client.get(f"{prefix}/v1/cases", headers=bearer(reader)).json()
    assert listed["total"] == FILMS
    assert {case["case_id"] for case in listed["cases"]} == {answer["case_id"] for answer in answers}
    assert not any(case["reviewed"] for case in listed["cases"])
    first = client.get(f"{prefix}/v1/cases/{answers[0]['case_id']}", headers=bearer(reader)).json()
    assert first["answer"] == answers[0] and first["notice"] == RESEARCH_NOTICE
    assert [(j["hand"], j["joint"]) for j in first["joints"]] == [(0, name) for name in JOINT_NAMES]
    png = client.get(f"{prefix}/v1/cases/{answers[0]['case_id']}/overlay.png", headers=bearer(reader))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"

    # A reader may look but not review.
    accepted = {"joints": [{"joint": name, "decision": "accepted"} for name in JOINT_NAMES]}
    refused = client.put(f"{prefix}/v1/cases/{answers[0]['case_id']}/review", json=accepted, headers=bearer(reader))
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"

    # Two reviews: one accepts every joint, one corrects mcp2.
    saved = client.put(f"{prefix}/v1/cases/{answers[0]['case_id']}/review", json=accepted, headers=headers)
    assert saved.status_code == 200, saved.text
    corrected_case = answers[1]["case_id"]
    model_score = answers[1]["hands"][0]["joints"]["mcp2"]["score"]
    new_score = (model_score + 2) % 6
    correction = {"joints": [{"hand": 0, "joint": "mcp2", "decision": "corrected", "score": new_score,
                              "comment": "erosion at the radial margin"}]}  # fmt: skip
    case = client.put(f"{prefix}/v1/cases/{corrected_case}/review", json=correction, headers=headers).json()
    mcp2 = next(j for j in case["joints"] if j["hand"] == 0 and j["joint"] == "mcp2")
    assert mcp2["review"]["decision"] == "corrected" and mcp2["review"]["score"] == new_score
    assert mcp2["review"]["reviewer"] == "dr-meyer"
    assert [(e["joint"], e["score"], e["reviewer"]) for e in case["history"]] == [("mcp2", new_score, "dr-meyer")]
    unreviewed = client.get(f"{prefix}/v1/cases", params={"reviewed": "false"}, headers=headers).json()
    assert unreviewed["total"] == FILMS - 2
    assert corrected_case not in {c["case_id"] for c in unreviewed["cases"]}

    # Similar joints come from the other cases, each with its score.
    similar = client.get(f"{prefix}/v1/cases/{corrected_case}/similar", params={"joint": "mcp2", "k": 8},
                         headers=headers).json()  # fmt: skip
    assert 0 < len(similar["similar"]) <= 8
    assert corrected_case not in {s["case_id"] for s in similar["similar"]}
    assert similar["similar"] == sorted(similar["similar"], key=lambda s: -s["similarity"])

    # Back to training: the reviewed cases as a manifest, and one epoch of the scorer on it.
    export = tmp_path / "export"
    run = [sys.executable, "-m", "deepxray.cli", "cases", "export", "--out", str(export), "--reviewed-only",
           "--database-url", url]  # fmt: skip
    printed = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    records = [json.loads(line) for line in (export / "manifest.jsonl").read_text().splitlines()]
    assert {record["case_id"] for record in records} == {answers[0]["case_id"], corrected_case}
    exported = next(r for r in records if r["case_id"] == corrected_case and r["hand"] == 0)
    assert exported["joints"]["mcp2"]["score"] == new_score
    models = tmp_path / "models"
    train = [sys.executable, "-m", "deepxray.cli", "train", "ratingen_score", "--data", str(export), "--epochs", "1",
             "--out", str(models)]  # fmt: skip
    trained = subprocess.run(train, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    card = json.loads((models / "ratingen_score" / "model_card.json").read_text())
    assert card["name"] == "ratingen_score"

    # And the shipped models measured against the reviewers: every exported hand scored, the correction counted.
    report = tmp_path / "report"
    evaluate = [sys.executable, "-m", "deepxray.cli", "evaluate", "--data", str(export), "--out", str(report),
                "--models", str(Settings().models_folder())]  # fmt: skip
    evaluated = subprocess.run(evaluate, capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    summary = json.loads((report / "report.json").read_text())["summary"]["scores"]
    assert summary["n_joints"] == 10 * len(records) and summary["n_joints_unscored"] == 0
    assert summary["accuracy"]["exact"]["value"] < 1.0  # the model gave mcp2 another grade than the reviewer

    # Deleting a case removes it for good.
    assert client.delete(f"{prefix}/v1/cases/{corrected_case}", headers=headers).status_code == 200
    gone = client.get(f"{prefix}/v1/cases/{corrected_case}", headers=headers)
    assert gone.status_code == 404 and gone.json()["error"] == "case_not_found"
