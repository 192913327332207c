"""The real application on Ray Serve, over HTTP: formats, a right hand, every error status, health, batching.

One Ray instance (2 CPUs, the one-machine profile of `serve_config.yaml` with its `args`; the `serve_app`
fixture of tests/conftest.py) serves the shipped models for the whole module; Serve and Ray are always shut down afterwards. Two small extra applications share
its model deployments: `/tight` (a 1 MiB upload limit and a 1 ms stage timeout: 413 and 504) and
`/overload` (an ingress that takes one request at a time and queues one: 503 with Retry-After).

The models' accuracy is not under test here. With trained models (cards: body-part validation accuracy and the
detector's share of joints found within a quarter MCP distance both at least 0.9) a hand phantom must be scored
and a chest refused; with barely trained stand-ins (DEEPXRAY_MODELS_DIR pointing at a quick training run) a refusal
(422) of a hand, or a score for a chest, is accepted as long as the answer keeps the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from deepxray.api.keys import add_key
from deepxray.api.schemas import ChestAnswer, ScoreAnswer
from deepxray.deployments.ingress import Ingress
from deepxray.labels import JOINT_NAMES, RESEARCH_NOTICE
from deepxray.models.artifacts import read_card
from deepxray.models.registry import MODEL_NAMES
from deepxray.settings import Settings
from loadtests.harness import APP, models_dir, wait_ready

pytestmark = [pytest.mark.serve, pytest.mark.slow]

MODELS = models_dir()
DEPLOYMENTS = {"body_part": "BodyPart", "joint_detection": "JointDetection", "ratingen_score": "RatingenScore"}


def models_trained() -> bool:
    """The cards say the models work on phantoms: then hands must be scored and other images refused."""
    body_part = read_card(MODELS / "body_part").validation_metrics
    detector = read_card(MODELS / "joint_detection").validation_metrics
    return body_part.get("accuracy", 0.0) >= 0.9 and detector.get("within_quarter_mcp_distance", 0.0) >= 0.9


@dataclass
class Served:
    client: httpx.Client
    url: str
    trained: bool
    pids: dict[str, int]
    first_answers: list[httpx.Response] = field(default_factory=list)  # sent at once when /readyz said ready
    statuses: list[int] = field(default_factory=list)

    def post(self, data: bytes, path: str = "/score", name: str = "upload", **kwargs) -> httpx.Response:
        response = self.client.post(path, files={"xray": (name, data, "application/octet-stream")}, **kwargs)
        self.statuses.append(response.status_code)
        return response


def model_pids() -> dict[str, int]:
    from ray import serve

    return {
        name: serve.get_deployment_handle(deployment, app_name=APP).info.remote().result(timeout_s=30)["pid"]
        for name, deployment in DEPLOYMENTS.items()
    }


def first_answers(url: str, data: bytes, clients: int = 4) -> list[httpx.Response]:
    """`clients` uploads sent together, as soon as `/readyz` said ready (`serve_app` waited for it)."""

    async def send():
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            files = {"xray": ("hand.png", data, "image/png")}
            return await asyncio.gather(*(client.post("/score", files=files) for _ in range(clients)))

    return asyncio.run(send())


@pytest.fixture(scope="module")
def served(serve_app, radiographs):
    """The `serve_app` fixture's application with a client, what the cards say, the model replicas' pids and
    the answers to the first requests it got."""
    first = first_answers(serve_app, radiographs.file("left_hand", "png"))
    with httpx.Client(base_url=serve_app, timeout=120) as client:
        yield Served(client, serve_app, models_trained(), model_pids(), first)


def extra_ingress(served: Served, name: str, settings: Settings, **options) -> str:
    """Another small application on the same model deployments (an ingress only); returns its route."""
    from ray import serve

    handles = [serve.get_deployment_handle(deployment, app_name=APP) for deployment in DEPLOYMENTS.values()]
    ingress = Ingress.options(name=f"{name.capitalize()}Ingress", ray_actor_options={"num_cpus": 0.05}, **options)
    serve.run(ingress.bind(*handles, settings=settings), name=name, route_prefix=f"/{name}", blocking=False)
    wait_ready(f"{served.url}/{name}", 120)
    return f"/{name}"


@pytest.fixture(scope="module")
def tight(served):
    """A 1 MiB upload limit and a 1 ms stage timeout."""
    from ray import serve

    yield extra_ingress(served, "tight", Settings(max_upload_bytes=2**20, stage_timeout_s=0.001))
    serve.delete("tight")


@pytest.fixture(scope="module")
def overload(served):
    """One image scored at a time, one waiting: the ingress turns the rest away."""
    from ray import serve

    # Serve's own limits well above the burst below, so that every refusal is the gate's (the JSON 503 under
    # test): with the profile's 16 ongoing + 8 queued, Serve's router was seen to queue part of a burst of 16 on
    # this 2-core machine and drop the ninth queued request with its plain-text 503.
    yield extra_ingress(
        served,
        "overload",
        Settings(max_scoring=1, max_waiting=1, retry_after_s=2),
        max_ongoing_requests=64,
        max_queued_requests=64,
    )
    serve.delete("overload")


@pytest.fixture(scope="module")
def locked(served, tmp_path_factory):
    """An ingress with auth_mode api_key and one key with scope `score`: its route and the key."""
    from ray import serve

    keys_file = tmp_path_factory.mktemp("keys") / "api_keys.txt"
    key = add_key(keys_file, "lab-a", frozenset({"score"}))
    yield extra_ingress(served, "locked", Settings(auth_mode="api_key", api_keys_file=keys_file)), key
    serve.delete("locked")


def assert_error(response: httpx.Response, status: int, *codes: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] in codes
    assert isinstance(body["detail"], str) and len(body["detail"]) > 20
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def assert_scored(served: Served, response: httpx.Response, laterality: str = "L") -> dict | None:
    """A contract answer; with untrained stand-in models a contract refusal (422) is accepted too."""
    if response.status_code == 422 and not served.trained:
        assert_error(response, 422, "not_a_hand", "joints_not_found", "implausible_joints")
        return None
    assert response.status_code == 200, response.text
    answer = response.json()
    ScoreAnswer.model_validate(answer)  # what the service answers is what /openapi.json publishes
    assert answer["hands"][0]["laterality"] == laterality and answer["hands"][0]["scores"] == answer["scores"]
    assert list(answer["scores"]) == list(JOINT_NAMES)
    assert all(answer["scores"][name] in range(6) for name in JOINT_NAMES)
    assert answer["total"] == sum(answer["scores"].values())
    assert answer["laterality"] == laterality
    assert answer["body_part"]["label"] == ("left_hand" if laterality == "L" else "right_hand")
    assert set(answer["joints"]) == set(JOINT_NAMES)
    assert set(answer["models"]) == set(MODEL_NAMES)
    assert answer["notice"] == RESEARCH_NOTICE
    assert answer["request_id"] == response.headers["x-request-id"]
    return answer


# ------------------------------------------------------------------------------------------------ formats


def test_16_bit_png_hand(served, radiographs):
    answer = assert_scored(served, served.post(radiographs.file("left_hand", "png"), name="hand.png"))
    if answer and served.trained:
        phantom = radiographs.phantom("left_hand")
        for name in JOINT_NAMES:  # where the joints are, within a crop's reach
            centre, truth = answer["joints"][name]["center"], phantom.centers[name]
            assert abs(centre[0] - truth[0]) < 150 and abs(centre[1] - truth[1]) < 150, name


def test_the_first_requests_after_ready_are_scored_not_timed_out(served):
    """Four films sent together the moment `/readyz` said ready: each answered by the models (no version lookup
    before scoring that could time out while the others are scored)."""
    for response in served.first_answers:
        assert_scored(served, response)


@pytest.mark.parametrize("fmt, media_type", [("png", "image/png"), ("dicom", "application/dicom")])
def test_the_film_as_the_body_itself(served, radiographs, fmt, media_type):
    data = radiographs.file("left_hand", fmt)
    response = served.client.post("/score", content=data, headers={"content-type": media_type})
    served.statuses.append(response.status_code)
    assert_scored(served, response)


def test_answers_name_the_models_that_computed_them(served, radiographs):
    answer = assert_scored(served, served.post(radiographs.file("left_hand", "png")))
    if answer is not None:
        assert answer["models"] == {name: read_card(MODELS / name).tag for name in MODEL_NAMES}


def test_jpeg_hand(served, radiographs):
    assert_scored(served, served.post(radiographs.file("left_hand", "jpeg"), name="hand.jpg"))


def test_monochrome1_dicom_hand(served, radiographs):
    data = radiographs.file("left_hand", "dicom", photometric="MONOCHROME1")
    assert_scored(served, served.post(data, name="hand.dcm"))


def dicom_file(radiographs, tmp_path, name: str, **header) -> bytes:
    from deepxray.phantoms.writers import write_dicom

    path = tmp_path / f"{name}.dcm"
    write_dicom(path, radiographs.phantom("left_hand"), "integration", **header)
    return path.read_bytes()


def test_dicom_as_archives_write_it(served, radiographs, tmp_path):
    """A TIFF header in the preamble, MONOCHROME1 with Presentation LUT Shape INVERSE: the same answer as the
    plain file; a header that disagrees with the models is a warning."""
    plain = served.post(dicom_file(radiographs, tmp_path, "plain", photometric="MONOCHROME1"), name="plain.dcm")
    archived = dicom_file(
        radiographs, tmp_path, "archived", photometric="MONOCHROME1", presentation_lut_shape="INVERSE",
        preamble="tiff", image_laterality="R",
    )  # fmt: skip
    assert archived[:4] in (b"II*\x00", b"MM\x00*") and archived[128:132] == b"DICM"
    answer = assert_scored(served, served.post(archived, name="archived.dcm"))
    if answer is not None:
        assert answer["scores"] == assert_scored(served, plain)["scores"]
        assert any("says RIGHT" in warning for warning in answer["warnings"])


def test_a_dicom_of_another_modality_is_422_naming_it(served, radiographs, tmp_path):
    body = assert_error(
        served.post(dicom_file(radiographs, tmp_path, "ct", modality="CT")), 422, "not_radiograph_modality"
    )
    assert body["modality"] == "CT" and "CT" in body["detail"]


@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_a_film_stored_turned_is_scored_upright(served, radiographs, quarter_turns):
    import cv2

    from deepxray.phantoms.stored import store

    stored = store(radiographs.phantom("left_hand"), f"turned{90 * quarter_turns}")  # counter-clockwise
    answer = assert_scored(served, served.post(cv2.imencode(".png", stored.image)[1].tobytes(), name="turned.png"))
    if answer and served.trained:
        assert answer["orientation"] == {"rotated_deg": 90 * quarter_turns}
        for name in JOINT_NAMES:  # in the stored file's coordinates
            centre, truth = answer["joints"][name]["center"], stored.centers[name]
            assert abs(centre[0] - truth[0]) < 150 and abs(centre[1] - truth[1]) < 150, name


def test_a_mirrored_left_hand_is_scored_as_the_right_hand_it_shows(served, radiographs):
    import cv2
    import numpy as np

    mirrored = np.ascontiguousarray(radiographs.phantom("left_hand").image[:, ::-1])
    assert_scored(served, served.post(cv2.imencode(".png", mirrored)[1].tobytes(), name="m.png"), laterality="R")


@pytest.mark.parametrize("quarter_turns", [0, 1])
def test_a_film_of_both_hands_answers_every_hand(served, radiographs, quarter_turns):
    """Both hands side by side (and the same film stored turned): two hands, left first, as the schema says,
    each where it lies on the uploaded file."""
    import cv2
    import numpy as np

    from deepxray.phantoms.stored import store

    stored = store(radiographs.phantom("both_hands"), f"turned{90 * quarter_turns}" if quarter_turns else "upright")
    response = served.post(cv2.imencode(".png", stored.image)[1].tobytes(), name="both.png")
    if response.status_code == 422 and not served.trained:
        assert_error(response, 422, "not_a_hand", "joints_not_found", "implausible_joints")
        return
    assert response.status_code == 200, response.text
    answer = response.json()
    ScoreAnswer.model_validate(answer)
    assert answer["body_part"]["label"] == "both_hands" and answer["notice"] == RESEARCH_NOTICE
    assert [hand["laterality"] for hand in answer["hands"]] == ["L", "R"] and answer["hands_not_scored"] == []
    assert answer["scores"] == answer["hands"][0]["scores"] and answer["laterality"] == "L"
    if served.trained:
        assert answer["orientation"] == {"rotated_deg": 90 * quarter_turns}
        for hand, truth in zip(answer["hands"], stored.hands, strict=True):  # both left hand first
            for name in JOINT_NAMES:  # in the stored file's coordinates
                assert np.hypot(*np.subtract(hand["joints"][name]["center"], truth.centers[name])) < 150, name


def test_right_hand(served, radiographs):
    assert_scored(served, served.post(radiographs.file("right_hand", "png"), name="right.png"), laterality="R")


def test_curl_as_in_the_original(served, radiographs, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    path = tmp_path / "hand.png"
    path.write_bytes(radiographs.file("left_hand", "png"))
    result = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-F", f"xray=@{path}", f"{served.url}/score"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout in (("200",) if served.trained else ("200", "422"))


# ------------------------------------------------------------------------------------------- error statuses


def test_empty_file_is_400(served, bad_files):
    assert_error(served.post(bad_files["empty"]), 400, "empty_file")


def test_truncated_png_is_400(served, bad_files):
    assert_error(served.post(bad_files["truncated_png"], name="cut.png"), 400, "undecodable")


def test_text_file_is_415(served, bad_files):
    body = assert_error(served.post(bad_files["text"], name="notes.txt"), 415, "unsupported_format")
    assert "PNG, JPEG, TIFF, DICOM" in body["detail"]


def test_decompression_bomb_is_413(served, bad_files):
    assert_error(served.post(bad_files["bomb_png"], name="bomb.png"), 413, "too_large")


def test_upload_over_the_configured_limit_is_413(served, tight, radiographs):
    body = assert_error(served.post(radiographs.file("left_hand", "png"), path=f"{tight}/score"), 413, "too_large")
    assert "limit is 1.0 MiB" in body["detail"]


@pytest.mark.parametrize(("body_part", "fmt"), [("chest", "png"), ("not_radiograph", "jpeg")])
def test_not_a_hand_is_422(served, radiographs, body_part, fmt):
    response = served.post(radiographs.file(body_part, fmt), name=f"{body_part}.{fmt}")
    if not served.trained and response.status_code == 200:
        return  # an untrained stand-in took it for a hand: the answer kept the contract, nothing more to check
    body = assert_error(response, 422, "not_a_hand", *(() if served.trained else ("joints_not_found",)))
    if body["error"] == "not_a_hand":
        assert body["body_part"]["label"] in body["detail"].replace(" ", "_")
        if served.trained:
            assert body["body_part"]["label"] not in ("left_hand", "right_hand")


def test_analyze_answers_a_chest_with_its_findings_and_a_hand_as_score_does(served, radiographs, tmp_path):
    """`POST /analyze` through the proxy: a chest phantom with a cardiomegaly and an effusion drawn gets the
    fourteen labels from the ChestFindings deployment; a hand the `/score` answer; a non-radiograph the 422."""
    from deepxray.labels import CHEST_FINDINGS
    from deepxray.phantoms.chest import render_chest_phantom
    from deepxray.phantoms.writers import write_png

    if not (MODELS / "chest_findings").is_dir():
        pytest.skip(f"no chest_findings model in {MODELS}")
    phantom = render_chest_phantom(7, 0, present={"Cardiomegaly", "Pleural Effusion"})
    write_png(tmp_path / "chest.png", phantom.image)
    response = served.client.post(
        "/analyze", content=(tmp_path / "chest.png").read_bytes(), headers={"content-type": "image/png"}
    )
    served.statuses.append(response.status_code)
    assert response.status_code == 200, response.text
    answer = response.json()
    ChestAnswer.model_validate(answer)
    assert [finding["label"] for finding in answer["findings"]] == list(CHEST_FINDINGS)
    assert answer["models"]["chest_findings"] == read_card(MODELS / "chest_findings").tag
    assert set(answer["heatmaps"]) == set(answer["positive"])
    if served.trained:
        assert "Cardiomegaly" in answer["positive"], answer["positive"]
    hand = radiographs.file("left_hand", "png")
    analyzed = served.client.post("/analyze", files={"xray": ("hand.png", hand)}, headers={"x-request-id": "a"})
    scored = served.client.post("/score", files={"xray": ("hand.png", hand)}, headers={"x-request-id": "a"})
    assert analyzed.status_code == scored.status_code == 200
    assert analyzed.json() == scored.json()
    other = served.client.post("/analyze", files={"xray": ("x.jpg", radiographs.file("not_radiograph", "jpeg"))})
    assert_error(other, 422, "not_a_hand", *(() if served.trained else ("joints_not_found",)))


def test_overload_is_503_with_retry_after(served, overload, radiographs):
    data = radiographs.file("left_hand", "jpeg")

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served.url, timeout=120) as client:
            return await asyncio.gather(
                *(client.post(f"{overload}/score", files={"xray": ("hand.jpg", data)}) for _ in range(16))
            )

    responses = asyncio.run(flood())
    statuses = [r.status_code for r in responses]
    served.statuses.extend(statuses)
    assert set(statuses) <= ({200, 503} if served.trained else {200, 422, 503}), statuses
    refused = [r for r in responses if r.status_code == 503]
    assert refused, statuses
    assert all(r.headers.get("retry-after") == "2" for r in refused), [
        (r.headers.get("retry-after"), r.text) for r in refused if r.headers.get("retry-after") != "2"
    ]
    assert all("capacity" in assert_error(r, 503, "overloaded")["detail"] for r in refused)
    assert len(refused) < len(responses)  # the admitted ones were answered


def test_a_stage_that_does_not_answer_in_time_is_504(served, tight, radiographs):
    data = radiographs.file("left_hand", "jpeg")
    assert len(data) < 2**20
    body = assert_error(served.post(data, path=f"{tight}/score"), 504, "stage_timeout")
    assert "body-part" in body["detail"]


# ------------------------------------------------------------------------------------------- health, models


def test_health_readiness_model_cards_and_docs(served):
    assert served.client.get("/healthz").json()["status"] == "ok"
    ready = served.client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert all(ready["models"][name]["ready"] for name in MODEL_NAMES)
    cards = served.client.get("/v1/models").json()["models"]
    for name in MODEL_NAMES:
        assert cards[name]["name"] == name and "research use only" in cards[name]["intended_use"]
        assert ready["models"][name]["tag"] == f"{name}@{cards[name]['version']}"
    docs = served.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "/score" in served.client.get("/openapi.json").json()["paths"]


def test_client_request_id_is_echoed(served, bad_files):
    response = served.client.get("/healthz", headers={"X-Request-ID": "trace-7f3a"})
    assert response.headers["x-request-id"] == "trace-7f3a" == response.json()["request_id"]
    response = served.post(bad_files["text"], headers={"X-Request-ID": "trace-7f3b"})
    assert response.headers.get_list("x-request-id") == ["trace-7f3b"]
    assert response.json()["request_id"] == "trace-7f3b"


# ----------------------------------------------------------------------------------------------- batching


def test_the_ten_crops_of_one_request_reach_the_scorer_in_one_batch(served, radiographs):
    import numpy as np
    from ray import serve

    scorer = serve.get_deployment_handle("RatingenScore", app_name=APP)
    assert scorer.batch_settings.remote().result(timeout_s=30)["max_batch_size"] == 10
    before = len(scorer.batch_sizes.remote().result(timeout_s=30))
    response = served.post(radiographs.file("left_hand", "png"))
    if response.status_code != 200:
        assert not served.trained
        # The stand-in models refused the hand before scoring: send ten crops the way the ingress does.
        crops = [np.zeros((96, 96), np.float16) for _ in JOINT_NAMES]
        pending = [scorer.score.remote(crop) for crop in crops]
        assert all(p.result(timeout_s=60)[0].shape == (6,) for p in pending)  # (probabilities, embedding)
    assert scorer.batch_sizes.remote().result(timeout_s=30)[before:] == [10]


# ------------------------------------------------------------------------------------------- evaluation


def test_evaluating_through_the_service_gives_the_in_process_numbers(served, tmp_path):
    """`deepxray evaluate --url` and the in-process evaluation of the same models report the same figures."""
    import json

    from deepxray.phantoms.generate import GenerationSettings, generate_dataset
    from evaluation.run import run_evaluation

    data = generate_dataset(
        tmp_path / "phantoms",
        6,
        "left_hand:3,right_hand:2,chest:1",
        GenerationSettings(seed=31, distribution="balanced"),
        workers=1,
        progress=False,
    )

    def figures(**where) -> dict:
        report = run_evaluation(data, tmp_path / "report", resamples=200, seed=5, progress=False, **where)
        summary = json.loads(report["json"].read_text(encoding="utf-8"))["summary"]
        summary.pop("time")  # seconds per image differ by nature
        return summary

    through_service = figures(url=served.url)
    in_process = figures(models=MODELS)
    if served.trained:
        assert through_service["scores"]["n_joints"] == 50  # the five hands were scored, the chest refused
    assert through_service == in_process


# ------------------------------------------------------------------------------------------ access control


def test_a_key_with_the_scope_scores_and_no_key_is_401(served, locked, radiographs):
    route, key = locked
    data = radiographs.file("left_hand")
    response = served.post(data, f"{route}/score", headers={"Authorization": f"Bearer {key}"})
    assert_scored(served, response)
    response = served.post(data, f"{route}/score")
    assert_error(response, 401, "missing_credential")
    assert response.headers["www-authenticate"] == 'Bearer realm="DeepXRay"'


def serve_memory(fragments: tuple[str, ...]) -> int:
    """Resident memory of the Ray processes whose command line holds one of `fragments`."""
    import psutil

    total = 0
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if any(fragment in command for fragment in fragments):
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
    return total


def post_without_credential(url: str, path: str, size: int) -> tuple[bytes, float, int]:
    """POST `size` bytes to `path` with no credential over a raw socket, the body sent from a thread while the
    answer is awaited: the status line, the seconds from the headers to it, and the body bytes sent by then."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        start = time.perf_counter()

        def send_body():
            nonlocal sent
            chunk = b"\0" * 2**16
            with contextlib.suppress(OSError):  # the service may close the connection once it has answered
                while sent < size:
                    connection.sendall(chunk)
                    sent += len(chunk)

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        answer = b""
        while b"\r\n" not in answer:
            piece = connection.recv(4096)
            if not piece:
                break
            answer += piece
        seconds, sent_then = time.perf_counter() - start, sent
        connection.shutdown(socket.SHUT_RDWR)
        sender.join(30)
    return answer.split(b"\r\n", 1)[0], seconds, sent_then


def test_a_50_mb_upload_without_a_credential_is_refused_without_reading_it(served, locked):
    """Refused before the body is read: the answer comes while the client is still sending, and the ingress never
    holds the upload (its memory stays flat).

    Serve's proxy reads the socket on its own, whatever the replica does (it queues the body for the replica
    without bound), so it holds what arrives before the answer: measured here, 5-25 MiB of each 50 MB, and its
    memory rose in steps by 56 MiB over 100 such uploads, by far less than one upload each time."""
    route, _ = locked
    size = 50 * 2**20
    post_without_credential(served.url, f"{route}/score", 2**20)  # warm the connection path once
    before = {name: serve_memory((name,)) for name in ("ProxyActor", "LockedIngress")}
    results = [post_without_credential(served.url, f"{route}/score", size) for _ in range(5)]
    grown = {name: serve_memory((name,)) - memory for name, memory in before.items()}
    seconds = sorted(result[1] for result in results)
    print(f"50 MB without a credential: 401 after {1000 * seconds[2]:.1f} ms (median of 5), at most "
          f"{max(r[2] for r in results) / 2**20:.1f} MiB sent by then; RSS of the ingress "
          f"{grown['LockedIngress'] / 2**20:+.1f} MiB, of Serve's proxy {grown['ProxyActor'] / 2**20:+.1f} MiB")  # fmt: skip
    assert all(status.endswith(b" 401 Unauthorized") for status, _, _ in results), results
    assert all(sent_then < size for _, _, sent_then in results)
    assert grown["LockedIngress"] < 5 * 2**20
    assert grown["ProxyActor"] < size  # five uploads, less than one of them kept


def test_replicas_survived_everything(served):
    """Runs last: no answer was a 500, and the same model replicas are alive and healthy."""
    from ray import serve

    assert 500 not in served.statuses
    assert model_pids() == served.pids
    application = serve.status().applications[APP]
    assert application.status == "RUNNING"
    for name, deployment in application.deployments.items():
        assert deployment.status == "HEALTHY", (name, deployment.message)
        assert deployment.replica_states == {"RUNNING": 1}, name
