"""Access control on the served application, end to end, as an operator starts it: `serve run deepxray.app:graph`
with auth_mode jwt set only through the environment (DEEPXRAY_AUTH_MODE, DEEPXRAY_JWKS, DEEPXRAY_JWT_ISSUER,
DEEPXRAY_JWT_AUDIENCE), the issuer's keys and tokens made in the test (tests/identity.py); and the clients we ship
against it with a token: `deepxray evaluate --url --token` and the Locust load test.

One service on port 8000 (as the README runs it) for the whole module; `/readyz` stays open, so readiness needs no
token. With barely trained stand-in models (DEEPXRAY_MODELS_DIR) a hand may be refused (422) rather than scored:
either answer shows that the credential was accepted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from identity import IdentityProvider, SigningKey

from deepxray.labels import JOINT_NAMES
from deepxray.models.artifacts import read_card
from loadtests.harness import models_dir, models_present, service_process

pytestmark = [pytest.mark.serve, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PORT = 8000
URL = f"http://127.0.0.1:{PORT}"
AUTH_VARIABLES = ("DEEPXRAY_AUTH_MODE", "DEEPXRAY_JWKS", "DEEPXRAY_JWT_ISSUER", "DEEPXRAY_JWT_AUDIENCE")


def models_trained() -> bool:
    """The cards say the models work on phantoms (then a hand must be scored, not refused)."""
    body_part = read_card(models_dir() / "body_part").validation_metrics
    detector = read_card(models_dir() / "joint_detection").validation_metrics
    return body_part.get("accuracy", 0.0) >= 0.9 and detector.get("within_quarter_mcp_distance", 0.0) >= 0.9


def client_env(**variables: str) -> dict[str, str]:
    """This environment without any credential or auth setting of its own, with `variables`."""
    env = {name: value for name, value in os.environ.items() if name not in ("DEEPXRAY_TOKEN", *AUTH_VARIABLES)}
    return {**env, **variables}


@pytest.fixture(scope="module")
def provider(tmp_path_factory) -> IdentityProvider:
    return IdentityProvider(tmp_path_factory.mktemp("identity"), SigningKey.make("RS256"), SigningKey.make("ES256"))


@pytest.fixture(scope="module")
def service(provider) -> str:
    """`serve run deepxray.app:graph` with auth_mode jwt from the environment alone; its URL once ready."""
    if not models_present():
        pytest.skip("no model artifacts: train them (deepxray train) or set DEEPXRAY_MODELS_DIR")
    settings = provider.settings()
    env = client_env(**{f"DEEPXRAY_{name.upper()}": str(settings[name]) for name in
                        ("auth_mode", "jwks", "jwt_issuer", "jwt_audience")})  # fmt: skip
    assert set(AUTH_VARIABLES) <= set(env)
    # serve run shuts its application and Ray down on Ctrl-C
    with service_process([str(BIN / "serve"), "run", "deepxray.app:graph"], PORT, cwd=ROOT, env=env,
                         stop_signal=signal.SIGINT):  # fmt: skip
        yield URL


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service, timeout=120) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def score(client: httpx.Client, data: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post("/score", files={"xray": ("hand.png", data, "image/png")}, headers=headers or {})


def assert_scored(response: httpx.Response) -> None:
    """Let through to the models: scored (200), or with stand-in models a contract refusal (422)."""
    if response.status_code == 422 and not models_trained():
        assert response.json()["error"] in ("not_a_hand", "joints_not_found", "implausible_joints"), response.text
        return
    assert response.status_code == 200, response.text
    answer = response.json()
    assert list(answer["scores"]) == list(JOINT_NAMES) and answer["laterality"] == "L"


def assert_challenge(response: httpx.Response, status: int, error: str | None) -> None:
    """An RFC 6750 refusal: the status, `WWW-Authenticate: Bearer realm=...` with `error` (none for a request
    without a credential) and the API's JSON error."""
    assert response.status_code == status, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="DeepXRay"'), challenge
    if error:
        assert f'error="{error}"' in challenge, challenge
    else:
        assert "error=" not in challenge, challenge
    assert response.json()["request_id"] == response.headers["x-request-id"]


# -------------------------------------------------------------------------------------------- the service


def test_health_and_readiness_stay_open(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_a_token_with_the_score_scope_scores_and_none_is_refused(client, provider, radiographs):
    film = radiographs.file("left_hand", "png")
    assert_scored(score(client, film, bearer(provider.token(scope="score"))))
    assert_scored(score(client, film, bearer(provider.token(provider.keys[1], scope="score"))))  # ES256
    refused = score(client, film)
    assert_challenge(refused, 401, None)
    assert refused.json()["error"] == "missing_credential"


def test_a_token_the_service_cannot_trust_is_refused(client, provider, radiographs):
    film = radiographs.file("left_hand", "png", shape=(320, 256))
    stranger = SigningKey.make("RS256", kid=provider.keys[0].kid)  # the issuer's key id, another key
    assert_challenge(score(client, film, bearer(provider.token(stranger, scope="score"))), 401, "invalid_token")
    expired = provider.token(scope="score", lifetime_s=-600)
    assert_challenge(score(client, film, bearer(expired)), 401, "invalid_token")
    assert_challenge(score(client, film, bearer(provider.token(scope="score", aud="another"))), 401, "invalid_token")


def test_a_read_token_reads_the_cards_but_does_not_score(client, provider, radiographs):
    token = provider.token(scope="read")
    refused = score(client, radiographs.file("left_hand", "png", shape=(320, 256)), bearer(token))
    assert_challenge(refused, 403, "insufficient_scope")
    assert 'scope="score"' in refused.headers["www-authenticate"]
    cards = client.get("/v1/models", headers=bearer(token))
    assert cards.status_code == 200, cards.text
    assert cards.json()
    assert_challenge(client.get("/v1/models"), 401, None)


# --------------------------------------------------------------------------------------------- the clients


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("phantoms")
    deepxray(["phantoms", "generate", "--n", "3", "--out", str(folder), "--seed", "2000"], check=True)
    return folder


def deepxray(arguments: list[str], env: dict[str, str] | None = None, check: bool = False):
    result = subprocess.run([str(BIN / "deepxray"), *arguments], cwd=ROOT, env=env or client_env(),
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def evaluate(phantoms: Path, out: Path, *options: str, env: dict[str, str] | None = None):
    arguments = ["evaluate", "--data", str(phantoms), "--out", str(out), "--url", URL, "--limit", "2",
                 "--resamples", "20", *options]  # fmt: skip
    return deepxray(arguments, env)


def written(folder: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in folder.rglob("*") if path.is_file())


def test_evaluate_sends_the_token_and_never_shows_it(service, provider, phantoms, tmp_path):
    token = provider.token(scope="score")
    result = evaluate(phantoms, tmp_path / "given", "--token", token)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "given" / "report.md").is_file()
    assert token not in result.stdout + result.stderr + written(tmp_path / "given")
    # The same from the environment variable every client reads.
    result = evaluate(phantoms, tmp_path / "from_env", env=client_env(DEEPXRAY_TOKEN=token))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "from_env" / "report.md").is_file()


@pytest.mark.parametrize(
    ("scope", "refusal"),
    [(None, "401 missing_credential"), ("read", "403 insufficient_scope")],
    ids=["no token", "read scope only"],
)
def test_evaluate_refused_stops_with_one_line(service, provider, phantoms, tmp_path, scope, refusal):
    options = ("--token", provider.token(scope=scope)) if scope else ()
    result = evaluate(phantoms, tmp_path / "report", *options)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"deepxray: error: the service at {URL} refused the evaluation ({refusal}"), last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "report" / "report.md").exists()


def test_locust_sends_the_token(service, provider, tmp_path):
    from loadtests.pool import ensure_pool
    from loadtests.run import LoadRun, run_load

    pool = ensure_pool(tmp_path / "pool", hands=1, others=1, seed=6200)
    token = provider.token(scope="score")
    run = LoadRun(service, users=1, duration_s=4, groups="png,others", warmup_s=0, token=token)
    assert token not in repr(run)
    summary = run_load(run, tmp_path / "out", pool, quiet=True)
    assert summary.requests > 0
    kinds = set(summary.kinds) | set(summary.failures)
    assert not kinds & {"http_401", "http_403"}, summary
    if models_trained():
        assert not summary.failures, summary.failures
    assert json.loads((tmp_path / "out" / "requests.meta.json").read_text())["token"] is True
    assert token not in written(tmp_path / "out")
