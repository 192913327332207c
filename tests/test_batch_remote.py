"""The `--url` engine of `deepxray score` (deepxray/batch/remote.py): against a small stand-in service on a free
port (uvicorn in a thread; no Ray), then the `deepxray score` command against the real application."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from deepxray.batch.context import pseudonym
from deepxray.batch.inputs import Film, file_id
from deepxray.batch.remote import (
    THREAD_NAME,
    AccessRefusedError,
    RetryPolicy,
    ServiceRefusedError,
    check_url,
    retry_after_s,
    score_films_via_service,
)
from deepxray.batch.rows import COLUMNS
from deepxray.labels import JOINT_NAMES
from deepxray.models.registry import MODEL_NAMES
from loadtests.harness import HOST, free_port, served_in_thread

DEEPXRAY = str(Path(sys.executable).parent / "deepxray")
TOKEN = "s3cret-token-never-shown"
QUICK = RetryPolicy(timeout_s=5, retries=2, backoff_s=0.01, max_backoff_s=0.05, busy_tries=3, min_retry_after_s=0.01)


def answer(laterality: str = "L") -> dict:
    """A `/score` answer with one hand."""
    scores = {name: k % 6 for k, name in enumerate(JOINT_NAMES)}
    return {
        "scores": scores,
        "total": sum(scores.values()),
        "body_part": {"label": "left_hand" if laterality == "L" else "right_hand", "probability": 0.97},
        "orientation": {"rotated_deg": 0},
        "warnings": [],
        "models": {name: f"{name}@1.0.0" for name in MODEL_NAMES},
        "hands": [{"laterality": laterality, "scores": scores, "total": sum(scores.values())}],
        "hands_not_scored": [],
    }


def error(status: int, code: str, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, "request_id": "req-1"}, status, headers=headers)


Handler = Callable[[bytes, int], Awaitable[Response]]


class Seen:
    """What the stand-in saw during one test: the requests, and the most of them in flight at once."""

    def __init__(self):
        self.requests: list[dict] = []
        self.in_flight = self.most_in_flight = 0


class FakeService:
    """A stand-in for the service: every `POST /score` is answered by `handler(upload, index)` (index: the how
    many-th request of the test), after the request (headers, field, file name, time) is noted in `seen`."""

    def __init__(self):
        self.handler: Handler = self.scored
        self.seen = Seen()
        self.url = ""

    @property
    def requests(self) -> list[dict]:
        return self.seen.requests

    @property
    def most_in_flight(self) -> int:
        return self.seen.most_in_flight

    @staticmethod
    async def scored(data: bytes, index: int) -> Response:
        return JSONResponse(answer())

    async def score(self, request: Request) -> Response:
        form = await request.form()
        upload = form.get("xray")
        data = await upload.read() if upload is not None else b""
        seen = self.seen  # a request of a test that is over counts in that test's
        index = len(seen.requests)
        seen.requests.append({"at": time.perf_counter(), "authorization": request.headers.get("authorization"),
                              "fields": list(form), "filename": getattr(upload, "filename", None), "data": data})  # fmt: skip
        seen.in_flight += 1
        seen.most_in_flight = max(seen.most_in_flight, seen.in_flight)
        try:
            return await self.handler(data, index)
        finally:
            seen.in_flight -= 1


@pytest.fixture(scope="module")
def fake_server():
    service = FakeService()
    app = Starlette(routes=[Route("/score", service.score, methods=["POST"])])
    with served_in_thread(app) as url:
        service.url = url
        yield service


@pytest.fixture()
def fake(fake_server):
    fake_server.handler, fake_server.seen = FakeService.scored, Seen()
    return fake_server


def films(folder: Path, *contents: bytes) -> list[tuple[Film, str | None]]:
    """Files of `contents` in `folder`, as `deepxray score` hands them to an engine."""
    made = []
    for number, content in enumerate(contents):
        path = folder / f"{number:03d}.png"
        path.write_bytes(content)
        made.append((Film(str(path), f"P-{number}"), file_id(path)))
    return made


def score_all(todo, url, **options) -> list[list[dict]]:
    options = {"token": None, "salt": None, "concurrency": 2, "policy": QUICK} | options
    return list(score_films_via_service(todo, url, **options))


def no_thread_left() -> bool:
    return not any(thread.name == THREAD_NAME for thread in threading.enumerate())


# ----------------------------------------------------------------------------------------- answers and rows


def test_every_answer_becomes_the_rows_the_other_engine_makes(fake, tmp_path):
    async def by_content(data: bytes, index: int) -> Response:
        if data == b"hand":
            return JSONResponse(answer("R"))
        if data == b"notes":
            return error(415, "unsupported_format", "Not an image format the service reads.")
        if data == b"chest":
            return JSONResponse({"error": "not_a_hand", "detail": "This looks like a chest.", "body_part": {}}, 422)
        if data == b"crash":
            return PlainTextResponse("Internal Server Error", 500)
        if data == b"slow stage":
            return error(504, "stage_timeout", "The detector did not answer in time.")
        return PlainTextResponse("<html>hello</html>")  # a 200 that is not an answer

    fake.handler = by_content
    todo = films(tmp_path, b"hand", b"notes", b"chest", b"crash", b"slow stage", b"other")
    todo.append((Film(str(tmp_path / "missing.png")), None))
    blocks = score_all(todo, fake.url + "/")
    by_source = {rows[0]["source"]: rows for rows in blocks}
    assert len(blocks) == len(by_source) == len(todo)
    assert all(list(row) == list(COLUMNS) and row["rows_of_film"] == len(rows) for rows in blocks for row in rows)
    outcome = {Path(source).name: [(row["status"], row["error"]) for row in rows] for source, rows in by_source.items()}
    assert outcome == {
        "000.png": [("scored", None)],
        "001.png": [("refused", "unsupported_format")],
        "002.png": [("refused", "not_a_hand")],
        "003.png": [("failed", "http_500")],
        "004.png": [("failed", "stage_timeout")],
        "005.png": [("failed", "bad_answer")],
        "missing.png": [("refused", "unreadable")],
    }
    scored = by_source[todo[0][0].source][0]
    assert (scored["laterality"], scored["patient_key"], scored["image_id"]) == ("R", "P-0", todo[0][1])
    assert [scored[name] for name in JOINT_NAMES] == [k % 6 for k in range(10)]
    assert by_source[todo[3][0].source][0]["detail"] == "Internal Server Error"
    assert "could not be read" in by_source[str(tmp_path / "missing.png")][0]["detail"]
    assert len(fake.requests) == 6  # the missing file was never posted
    assert no_thread_left()


def test_a_dicom_film_gets_its_study_context(fake, radiographs, tmp_path):
    (todo,) = films(tmp_path, radiographs.file("left_hand", "dicom", shape=(320, 256)))
    ((row,),) = score_all([todo], fake.url, salt="team-salt")
    assert (row["status"], row["modality"]) == ("scored", "DX")
    assert row["study_id"] is not None and len(row["study_id"]) == len(pseudonym("1.2", "team-salt"))


def test_the_upload_is_field_xray_with_the_token_and_no_file_name(fake, tmp_path):
    score_all(films(tmp_path, b"a", b"b"), fake.url, token=TOKEN)
    assert [r["authorization"] for r in fake.requests] == [f"Bearer {TOKEN}"] * 2
    assert all(r["fields"] == ["xray"] and r["filename"] == "image" for r in fake.requests)  # names stay here
    assert sorted(r["data"] for r in fake.requests) == [b"a", b"b"]
    fake.seen = Seen()
    score_all(films(tmp_path, b"c"), fake.url, token=None)
    assert fake.requests[0]["authorization"] is None


# ------------------------------------------------------------------------------------ concurrency, streaming


def test_at_most_concurrency_films_in_flight_and_rows_stream_as_films_finish(fake, tmp_path):
    async def slowly(data: bytes, index: int) -> Response:
        await asyncio.sleep(0.15)
        return JSONResponse(answer())

    fake.handler = slowly
    todo = films(tmp_path, *(b"film %d" % number for number in range(12)))
    first_at = None
    blocks = []
    for rows in score_films_via_service(todo, fake.url, concurrency=3, policy=QUICK):
        first_at = first_at or time.perf_counter()
        blocks.append(rows)
    assert len(blocks) == 12 and all(rows[0]["status"] == "scored" for rows in blocks)
    assert fake.most_in_flight == 3
    assert first_at < fake.requests[-1]["at"]  # the first film's rows came before the last film was posted
    assert no_thread_left()


def test_closing_early_cancels_what_is_in_flight_at_once(fake, tmp_path):
    async def first_fast_then_stuck(data: bytes, index: int) -> Response:
        if index > 0:
            await asyncio.sleep(60)
        return JSONResponse(answer())

    fake.handler = first_fast_then_stuck
    todo = films(tmp_path, *(b"film %d" % number for number in range(8)))
    rows = score_films_via_service(todo, fake.url, concurrency=1, policy=QUICK)
    with pytest.raises(KeyboardInterrupt):  # as Ctrl-C in the consumer's loop body (run.py) stops it
        for _ in rows:
            while len(fake.requests) < 2:  # the next film is in flight
                time.sleep(0.01)
            raise KeyboardInterrupt
    start = time.perf_counter()
    rows.close()  # what leaving the `for` does to the generator
    assert time.perf_counter() - start < 5
    assert no_thread_left()
    assert len(fake.requests) == 2  # nothing more was posted


# ------------------------------------------------------------------------------------------ busy, retries


def test_a_503_is_waited_for_as_retry_after_says_then_scored(fake, tmp_path):
    async def busy_once(data: bytes, index: int) -> Response:
        if index == 0:
            return error(503, "overloaded", "At capacity; retry in 1 s.", **{"Retry-After": "1"})
        return JSONResponse(answer())

    fake.handler = busy_once
    start = time.perf_counter()
    ((row,),) = score_all(films(tmp_path, b"hand"), fake.url)
    assert row["status"] == "scored" and row["seconds"] >= 1.0
    assert len(fake.requests) == 2 and fake.requests[1]["at"] - fake.requests[0]["at"] >= 0.95
    assert time.perf_counter() - start < 5


def test_a_service_that_stays_busy_gives_a_failed_row_after_the_tries(fake, tmp_path):
    async def always_busy(data: bytes, index: int) -> Response:
        if data == b"proxy":  # Serve's proxy when its own queue is full: plain text, no Retry-After
            return PlainTextResponse("Service unavailable", 503)
        return error(503, "overloaded", "At capacity; retry in 0 s.", **{"Retry-After": "0"})

    fake.handler = always_busy
    blocks = score_all(films(tmp_path, b"gate", b"proxy"), fake.url, concurrency=1)
    (gate,), (proxy,) = sorted(blocks, key=lambda rows: rows[0]["source"])
    assert (gate["status"], gate["error"], proxy["status"], proxy["error"]) == (
        "failed",
        "overloaded",
        "failed",
        "http_503",
    )
    assert gate["detail"].startswith("Still busy after 3 tries") and "At capacity" in gate["detail"]
    assert len(fake.requests) == 2 * QUICK.busy_tries


def test_no_answer_in_time_is_retried_then_a_failed_row(fake, tmp_path):
    async def stuck(data: bytes, index: int) -> Response:
        await asyncio.sleep(3)
        return JSONResponse(answer())

    fake.handler = stuck
    policy = RetryPolicy(timeout_s=0.3, retries=1, backoff_s=0.01)
    start = time.perf_counter()
    ((row,),) = score_all(films(tmp_path, b"hand"), fake.url, policy=policy)
    assert (row["status"], row["error"]) == ("failed", "timeout")
    assert "within 0.3 s; gave up after 2 tries" in row["detail"]
    assert len(fake.requests) == 2 and time.perf_counter() - start < 2.5


def test_a_port_nobody_listens_on_gives_unreachable_rows_quickly(tmp_path):
    start = time.perf_counter()
    blocks = score_all(films(tmp_path, b"a", b"b", b"c"), f"http://{HOST}:{free_port()}")
    assert [(rows[0]["status"], rows[0]["error"]) for rows in blocks] == [("failed", "unreachable")] * 3
    assert "could not be reached" in blocks[0][0]["detail"] and "after 3 tries" in blocks[0][0]["detail"]
    assert time.perf_counter() - start < 5


def test_a_connection_dropped_without_an_answer_is_retried_then_a_failed_row(tmp_path):
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()
        accepted = []

        def drop() -> None:
            with contextlib.suppress(OSError):
                while True:
                    connection, _ = listener.accept()
                    accepted.append(connection.recv(1024))
                    connection.close()

        threading.Thread(target=drop, daemon=True).start()
        ((row,),) = score_all(films(tmp_path, b"a"), f"http://{HOST}:{listener.getsockname()[1]}")
    assert (row["status"], row["error"]) == ("failed", "connection_lost")
    assert len(accepted) == QUICK.retries + 1


# ---------------------------------------------------------------------------------------- stopping the run


@pytest.mark.parametrize(
    ("status", "code", "token", "advice"),
    [
        (401, "invalid_token", TOKEN, "check the token (--token or DEEPXRAY_TOKEN)"),
        (401, "missing_credential", None, "give a token or API key with --token or DEEPXRAY_TOKEN"),
        (403, "insufficient_scope", TOKEN, "the scope 'score'"),
    ],
)
def test_a_refused_credential_stops_the_run_at_once(fake, tmp_path, status, code, token, advice):
    async def refuse(data: bytes, index: int) -> Response:
        await asyncio.sleep(0.05)
        return error(status, code, "The credential does not pass.")

    fake.handler = refuse
    todo = films(tmp_path, *(b"film %d" % number for number in range(20)))
    with pytest.raises(AccessRefusedError) as refused:
        score_all(todo, fake.url, token=token, concurrency=2)
    message = str(refused.value)
    assert isinstance(refused.value, ValueError) and "\n" not in message
    assert f"refused to score ({status} {code}: The credential does not pass.)" in message
    assert advice in message and TOKEN not in message
    assert len(fake.requests) <= 3  # not one request per film
    assert no_thread_left()


def test_a_url_that_is_not_the_service_stops_the_run(fake, tmp_path):
    with pytest.raises(ServiceRefusedError, match="404 .*base URL of a DeepXRay service"):
        score_all(films(tmp_path, b"a", b"b"), fake.url + "/score")
    with pytest.raises(ValueError, match="not an http"):
        score_all(films(tmp_path, b"a"), "127.0.0.1:8000")
    assert check_url("https://xray.example.org/ ") == "https://xray.example.org"


def test_retry_after_is_seconds_or_a_date():
    assert retry_after_s("2") == 2.0 and retry_after_s(" 0 ") == 0.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date gone by: at once
    assert 50 < retry_after_s(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))) <= 60
    assert retry_after_s(None) is retry_after_s("soon") is retry_after_s("nan") is None


# ---------------------------------------------------------------------------------- the real application


def models_trained() -> bool:
    """The cards say the models work on phantoms (as tests/test_serving_integration.py reads them)."""
    from deepxray.models.artifacts import read_card
    from loadtests.harness import models_dir

    folder = models_dir()
    body_part = read_card(folder / "body_part").validation_metrics
    detector = read_card(folder / "joint_detection").validation_metrics
    return body_part.get("accuracy", 0.0) >= 0.9 and detector.get("within_quarter_mcp_distance", 0.0) >= 0.9


def deepxray_score(*arguments: str, token: str | None = None) -> subprocess.CompletedProcess:
    """`deepxray score ... --quiet` in a process of its own, with DEEPXRAY_TOKEN set to `token` (or unset)."""
    env = {name: value for name, value in os.environ.items() if name != "DEEPXRAY_TOKEN"}
    if token is not None:
        env["DEEPXRAY_TOKEN"] = token
    return subprocess.run([DEEPXRAY, "score", *arguments, "--quiet"], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        assert reader.fieldnames == list(COLUMNS)
        return list(reader)


@pytest.mark.serve
@pytest.mark.slow
def test_deepxray_score_with_url_scores_through_the_real_service(serve_app, radiographs, bad_files, tmp_path):
    folder = tmp_path / "registry"
    folder.mkdir()
    files = {
        "left.png": radiographs.file("left_hand", "png"),
        "right.jpg": radiographs.file("right_hand", "jpeg"),
        "both.dcm": radiographs.file("both_hands", "dicom"),
        "chest.png": radiographs.file("chest", "png"),
        "cut.png": bad_files["truncated_png"],
        "notes": bad_files["text"],  # no suffix, as archives name files: a folder contributes it
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    out = tmp_path / "scores.csv"
    result = deepxray_score(str(folder), "--out", str(out), "--url", serve_app, "--concurrency", "3")
    assert result.returncode == 0, result.stderr
    assert "scored: " in result.stdout and "failed: 0" in result.stdout
    rows = read_rows(out)
    by_file: dict[str, list[dict]] = {}
    for row in rows:
        by_file.setdefault(Path(row["source"]).name, []).append(row)
    assert set(by_file) == set(files)
    assert all(int(row["rows_of_film"]) == len(film) for film in by_file.values() for row in film)
    assert all(film[0]["image_id"] == file_id(folder / name) for name, film in by_file.items())
    refused = {name: film[0]["error"] for name, film in by_file.items() if film[0]["status"] == "refused"}
    assert refused.pop("cut.png") == "undecodable" and refused.pop("notes") == "unsupported_format"
    expected = {"left.png": ["L"], "right.jpg": ["R"], "both.dcm": ["L", "R"]}
    for name, lateralities in expected.items():
        if not models_trained() and name in refused:
            continue  # barely trained stand-in models may refuse a hand (422); the row says so
        film = by_file[name]
        assert [(row["status"], row["laterality"]) for row in film] == [("scored", side) for side in lateralities]
        assert all(sum(int(row[joint]) for joint in JOINT_NAMES) == int(row["total"]) for row in film)
    assert by_file["both.dcm"][0]["modality"] == "DX" and by_file["left.png"][0]["modality"] == ""
    if models_trained():
        assert refused == {"chest.png": "not_a_hand"}
    assert all(row["status"] != "failed" for row in rows)


@pytest.fixture()
def locked_and_busy(serve_app, tmp_path):
    """A second ingress on the same models with access control (one API key) that scores one film at a time
    and queues none: its URL and the key."""
    from ray import serve

    from deepxray.api.keys import add_key
    from deepxray.deployments.ingress import Ingress
    from deepxray.settings import Settings
    from loadtests.harness import APP, wait_ready

    keys_file = tmp_path / "api_keys.txt"
    key = add_key(keys_file, "lab-a", frozenset({"score"}))
    settings = Settings(auth_mode="api_key", api_keys_file=keys_file, max_scoring=1, max_waiting=0, retry_after_s=1)
    handles = [serve.get_deployment_handle(name, app_name=APP) for name in ("BodyPart", "JointDetection", "RatingenScore")]  # fmt: skip
    ingress = Ingress.options(name="LockedBusyIngress", ray_actor_options={"num_cpus": 0.05},
                              max_ongoing_requests=64, max_queued_requests=64)  # fmt: skip
    serve.run(ingress.bind(*handles, settings=settings), name="lockedbusy", route_prefix="/lockedbusy", blocking=False)
    wait_ready(f"{serve_app}/lockedbusy", 120)
    try:
        yield f"{serve_app}/lockedbusy", key
    finally:
        serve.delete("lockedbusy")


@pytest.mark.serve
@pytest.mark.slow
def test_deepxray_score_with_url_needs_the_key_and_waits_out_503(locked_and_busy, radiographs, tmp_path):
    url, key = locked_and_busy
    folder = tmp_path / "registry"
    folder.mkdir()
    for number, (body_part, fmt) in enumerate([("left_hand", "png"), ("right_hand", "jpeg"), ("left_hand", "jpeg")]):
        (folder / f"{number}.{'png' if fmt == 'png' else 'jpg'}").write_bytes(radiographs.file(body_part, fmt))
    out = tmp_path / "scores.csv"

    refused = deepxray_score(str(folder), "--out", str(out), "--url", url)
    assert refused.returncode == 2, refused.stderr
    (line,) = refused.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"deepxray: error: the service at {url} refused to score (401 missing_credential")
    assert "--token or DEEPXRAY_TOKEN" in line

    out = tmp_path / "scores-with-key.csv"
    scored = deepxray_score(str(folder), "--out", str(out), "--url", url, "--concurrency", "3", token=key)
    assert scored.returncode == 0, scored.stderr
    assert key not in scored.stdout + scored.stderr + out.read_text()
    rows = read_rows(out)
    assert len(rows) == 3 and all(row["status"] in ("scored", "refused") for row in rows)
    if models_trained():
        assert all(row["status"] == "scored" for row in rows)
