"""Access control without Ray: the API (`create_app`) with auth_mode api_key and jwt, keys and tokens made in the
test (tests/identity.py), every refusal with its status, its RFC 6750 `WWW-Authenticate` and the API's JSON shape.

An authorised request to `/score` without a file gets 400 `missing_file`: the access check let it through to the
upload. The key set over https is tested with a fetch function and a clock of the test's own (no network).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from identity import AUDIENCE, ISSUER, IdentityProvider, SigningKey
from pydantic import ValidationError

from deepxray.api.keys import read_keys
from deepxray.api.routes import create_app
from deepxray.api.service import ScoringService
from deepxray.api.tokens import KeySet
from deepxray.logs import LOGGER_NAME
from deepxray.settings import Settings

DEEPXRAY = str(Path(sys.executable).parent / "deepxray")


class CardsOnly:
    """A model backend that answers the model cards (GET /v1/models) and nothing else."""

    async def cards(self) -> dict:
        return {"body_part": {"name": "body_part"}}

    async def info(self) -> dict:
        return {}


def client_for(**settings) -> TestClient:
    return TestClient(create_app(ScoringService(CardsOnly(), Settings(**settings))))


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def assert_refused(response, status: int, error: str, rfc_error: str | None) -> dict:
    """The refusal in the API's shape, with the RFC 6750 challenge: `error="..."` only when there is one."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["request_id"] == response.headers["x-request-id"]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="DeepXRay"')
    if rfc_error:
        assert f'error="{rfc_error}"' in challenge
    else:
        assert "error=" not in challenge  # RFC 6750 §3.1: no error code when no credential was sent
    return body


def passed_the_gate(response) -> bool:
    """An authorised POST /score without a file: the upload was asked for, so access was granted."""
    return response.status_code == 400 and response.json()["error"] == "missing_file"


@pytest.fixture
def provider(tmp_path) -> IdentityProvider:
    return IdentityProvider(tmp_path, SigningKey.make("RS256"), SigningKey.make("ES256"))


@pytest.fixture
def jwt_client(provider) -> TestClient:
    return client_for(**provider.settings())


# ------------------------------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("key_index", [0, 1], ids=["RS256", "ES256"])
def test_a_valid_token_with_the_scope_is_let_in(provider, jwt_client, key_index):
    token = provider.token(provider.keys[key_index], scope="score")
    assert passed_the_gate(jwt_client.post("/score", headers=bearer(token)))


def test_no_credential_is_401_without_an_error_code(jwt_client):
    body = assert_refused(jwt_client.post("/score"), 401, "missing_credential", None)
    assert "Authorization: Bearer" in body["detail"]


@pytest.mark.parametrize(
    "header",
    ["Basic ZGVtbzpkZW1v", "Bearer", "Bearer ", "Bearer two tokens", "Bearer tok\u00e9n", "Token abc"],
    ids=["basic", "no-token", "empty-token", "two-tokens", "bad-characters", "other-scheme"],
)
def test_a_malformed_header_is_401_invalid_request(jwt_client, header):
    response = jwt_client.post("/score", headers={"Authorization": header.encode("utf-8")})
    assert_refused(response, 401, "invalid_request", "invalid_request")


def test_two_authorization_headers_are_401_invalid_request(jwt_client, provider):
    token = provider.token()
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    assert_refused(jwt_client.post("/score", headers=headers), 401, "invalid_request", "invalid_request")


def refused_token(client, token: str) -> str:
    body = assert_refused(client.post("/score", headers=bearer(token)), 401, "invalid_token", "invalid_token")
    return body["detail"]


def test_a_wrong_signature_is_401(provider, jwt_client):
    impostor = SigningKey.make("RS256", kid=provider.keys[0].kid)  # same kid, another private key
    assert "signature" in refused_token(jwt_client, provider.token(impostor))


def test_an_expired_token_is_401(provider, jwt_client):
    assert "expired" in refused_token(jwt_client, provider.token(lifetime_s=-120))  # beyond the 30 s leeway


def test_a_token_within_the_leeway_is_let_in(provider, jwt_client):
    assert passed_the_gate(jwt_client.post("/score", headers=bearer(provider.token(scope="score", lifetime_s=-5))))


def test_a_token_not_yet_valid_is_401(provider, jwt_client):
    assert "not valid yet" in refused_token(jwt_client, provider.token(not_before_s=600))


def test_a_wrong_issuer_is_401(provider, jwt_client):
    assert "issuer" in refused_token(jwt_client, provider.token(iss="https://id.example.org/realms/other"))


def test_a_wrong_audience_is_401(provider, jwt_client):
    assert "audience" in refused_token(jwt_client, provider.token(aud="another-service"))


@pytest.mark.parametrize("claim", ["exp", "iss", "aud"])
def test_a_token_without_a_required_claim_is_401(provider, jwt_client, claim):
    assert claim in refused_token(jwt_client, provider.token(**{claim: None}))


def unsigned_token(header: dict, claims: dict, sign=None) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    signing_input = f"{part(header)}.{part(claims)}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def valid_claims(scope: str = "score") -> dict:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "iat": now, "exp": now + 300, "scope": scope}


def test_alg_none_is_401(provider, jwt_client):
    token = unsigned_token({"alg": "none", "typ": "JWT", "kid": provider.keys[0].kid}, valid_claims())
    assert "algorithm" in refused_token(jwt_client, token)


def test_hs256_signed_with_the_public_key_is_401(provider, jwt_client):
    """The classic confusion attack: an HMAC 'signed' with the issuer's public key, which anyone has."""
    public_pem = provider.keys[0].public_pem()
    header = {"alg": "HS256", "typ": "JWT", "kid": provider.keys[0].kid}
    token = unsigned_token(header, valid_claims(), lambda data: hmac.new(public_pem, data, hashlib.sha256).digest())
    assert "algorithm" in refused_token(jwt_client, token)


def test_an_rsa_key_cannot_vouch_for_an_ec_algorithm(provider, jwt_client):
    rsa_key = provider.keys[0]
    forged = SigningKey(rsa_key.kid, "ES256", SigningKey.make("ES256").private)
    refused_token(jwt_client, provider.token(forged))


def test_a_token_without_the_scope_is_403(provider, jwt_client):
    response = jwt_client.post("/score", headers=bearer(provider.token(scope="read")))
    body = assert_refused(response, 403, "insufficient_scope", "insufficient_scope")
    assert 'scope="score"' in response.headers["www-authenticate"] and "dr-meyer" in body["detail"]
    assert jwt_client.get("/v1/models", headers=bearer(provider.token(scope="read"))).status_code == 200
    response = jwt_client.get("/v1/models", headers=bearer(provider.token(scope="score")))
    assert_refused(response, 403, "insufficient_scope", "insufficient_scope")


def test_scopes_come_from_scope_or_scp_with_the_configured_prefix(provider):
    client = client_for(**provider.settings(scope_prefix="deepxray:"))
    assert passed_the_gate(client.post("/score", headers=bearer(provider.token(scope="openid deepxray:score"))))
    token = provider.token(scope=None, scp=["profile", "deepxray:score"])
    assert passed_the_gate(client.post("/score", headers=bearer(token)))
    response = client.post("/score", headers=bearer(provider.token(scope="score")))  # not this service's scope
    assert_refused(response, 403, "insufficient_scope", "insufficient_scope")
    assert 'scope="deepxray:score"' in response.headers["www-authenticate"]


def test_a_rotated_key_is_accepted_after_the_refresh_and_the_old_one_refused_once_it_left(provider, jwt_client):
    old, ec_key = provider.keys
    assert passed_the_gate(jwt_client.post("/score", headers=bearer(provider.token(old, scope="score"))))
    new = SigningKey.make("RS256")
    provider.publish(old, ec_key, new)  # the issuer adds its next key
    assert passed_the_gate(jwt_client.post("/score", headers=bearer(provider.token(new, scope="score"))))
    provider.publish(ec_key, new)  # ... and retires the old one
    assert "unknown kid" in refused_token(jwt_client, provider.token(old, scope="score"))
    assert passed_the_gate(jwt_client.post("/score", headers=bearer(provider.token(new, scope="score"))))


class FakeIssuer:
    """An issuer's JWKS endpoint as a fetch function, and a clock the test moves."""

    def __init__(self, *keys: SigningKey):
        self.keys, self.fetches, self.now = list(keys), 0, 1000.0

    def fetch(self, url: str) -> dict:
        assert url == "https://id.example.org/jwks"
        self.fetches += 1
        return {"keys": [key.public_jwk() for key in self.keys]}


def test_a_key_set_over_https_is_cached_and_fetched_again_for_an_unknown_kid_at_most_every_refetch_s():
    first, second = SigningKey.make("RS256"), SigningKey.make("ES256")
    issuer = FakeIssuer(first)
    key_set = KeySet("https://id.example.org/jwks", cache_s=300, refetch_s=10, fetch=issuer.fetch,
                     clock=lambda: issuer.now)  # fmt: skip

    async def look(kid):
        return await key_set.key(kid)

    assert asyncio.run(look(first.kid))["kid"] == first.kid and issuer.fetches == 1
    assert asyncio.run(look(first.kid)) is not None and issuer.fetches == 1  # cached
    issuer.keys.append(second)  # rotation at the issuer
    assert asyncio.run(look(second.kid)) is None and issuer.fetches == 1  # fetched 0 s ago: not again yet
    issuer.now += 10
    assert asyncio.run(look(second.kid))["kid"] == second.kid and issuer.fetches == 2  # unknown kid: fetched
    assert asyncio.run(look("made-up")) is None and issuer.fetches == 2  # a made-up kid cannot force fetches
    issuer.keys.remove(first)
    issuer.now += 301  # the cache expires: the retired key is gone
    assert asyncio.run(look(first.kid)) is None and issuer.fetches == 3


def test_a_jwks_url_must_be_https():
    with pytest.raises(ValueError, match="https"):
        KeySet("http://id.example.org/jwks", cache_s=300, refetch_s=10)


def test_an_unreachable_issuer_is_503_not_401(tmp_path):
    def unreachable(url):
        raise OSError("connection refused")

    key_set = KeySet("https://id.example.org/jwks", cache_s=300, refetch_s=10, fetch=unreachable)
    with pytest.raises(Exception) as raised:
        asyncio.run(key_set.key("any"))
    assert raised.value.status == 503 and raised.value.code == "auth_unavailable"


# ----------------------------------------------------------------------------------------------- API keys


@pytest.fixture
def keys_file(tmp_path) -> Path:
    return tmp_path / "api_keys.txt"


def new_key(keys_file: Path, key_id: str, scopes: str) -> str:
    key_out = keys_file.with_name(f"{key_id}.key")
    result = subprocess.run([DEEPXRAY, "keys", "new", "--id", key_id, "--scopes", scopes, "--keys-file",
                             str(keys_file), "--key-out", str(key_out)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    key = key_out.read_text().strip()
    assert key not in result.stdout + result.stderr and key not in keys_file.read_text()  # digests only
    assert result.stdout.strip() in keys_file.read_text().splitlines()  # it printed the line it added
    assert keys_file.stat().st_mode & 0o077 == 0 and key_out.stat().st_mode & 0o077 == 0
    return key


def test_api_keys_are_let_in_with_their_scopes_and_refused_once_revoked(keys_file):
    scorer, reader = new_key(keys_file, "lab-a", "score,read"), new_key(keys_file, "lab-b", "read")
    assert {key.key_id: sorted(key.scopes) for key in read_keys(keys_file)} == {
        "lab-a": ["read", "score"], "lab-b": ["read"]}  # fmt: skip
    client = client_for(auth_mode="api_key", api_keys_file=keys_file)
    assert passed_the_gate(client.post("/score", headers=bearer(scorer)))
    assert_refused(client.post("/score", headers=bearer(reader)), 403, "insufficient_scope", "insufficient_scope")
    assert client.get("/v1/models", headers=bearer(reader)).status_code == 200
    assert_refused(client.post("/score", headers=bearer(scorer[:-1] + "x")), 401, "invalid_token", "invalid_token")

    result = subprocess.run([DEEPXRAY, "keys", "revoke", "--id", "lab-a", "--keys-file", str(keys_file)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = assert_refused(client.post("/score", headers=bearer(scorer)), 401, "invalid_token", "invalid_token")
    assert "revoked" in body["detail"]
    assert client.get("/v1/models", headers=bearer(reader)).status_code == 200  # the other key still works
    listed = subprocess.run([DEEPXRAY, "keys", "list", "--keys-file", str(keys_file)], capture_output=True, text=True)
    assert listed.returncode == 0 and listed.stdout == "lab-b\tread\n"


def test_a_keys_file_broken_while_serving_refuses_everyone_with_503(keys_file):
    key = new_key(keys_file, "lab-a", "score")
    client = client_for(auth_mode="api_key", api_keys_file=keys_file)
    keys_file.write_text(keys_file.read_text() + "lab-b:not-a-digest:score\n")
    response = client.post("/score", headers=bearer(key))
    assert response.status_code == 503 and response.json()["error"] == "auth_unavailable"
    assert "line 2" in response.json()["detail"] and "retry-after" in response.headers


def test_a_missing_keys_file_stops_the_start_with_its_reason(tmp_path):
    with pytest.raises(ValueError, match="cannot read the keys file"):
        client_for(auth_mode="api_key", api_keys_file=tmp_path / "nowhere.txt")


def test_keys_new_refuses_unknown_scopes_and_a_taken_id(keys_file):
    new_key(keys_file, "lab-a", "score")
    for args, message in ((["--id", "lab-a", "--scopes", "score"], "already has a key lab-a"),
                          (["--id", "lab-c", "--scopes", "score,admin"], "unknown scope admin"),
                          (["--id", "lab c", "--scopes", "score"], "key id")):  # fmt: skip
        result = subprocess.run([DEEPXRAY, "keys", "new", *args, "--keys-file", str(keys_file)],
                                capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 2 and message in result.stderr and result.stderr.startswith("deepxray: error:")


# ------------------------------------------------------------------------------ settings, docs, audit, upload


def test_each_mode_names_the_settings_it_still_needs():
    with pytest.raises(ValidationError, match="DEEPXRAY_JWKS.*DEEPXRAY_JWT_ISSUER.*DEEPXRAY_JWT_AUDIENCE"):
        Settings(auth_mode="jwt")
    with pytest.raises(ValidationError, match="DEEPXRAY_API_KEYS_FILE"):
        Settings(auth_mode="api_key")
    with pytest.raises(ValidationError):
        Settings(auth_mode="basic")


def test_auth_settings_come_from_the_environment(monkeypatch, provider):
    for name, value in provider.settings().items():
        monkeypatch.setenv(f"DEEPXRAY_{name.upper()}", value)
    settings = Settings()
    assert (settings.auth_mode, settings.jwks, settings.jwt_issuer) == ("jwt", str(provider.jwks_path), ISSUER)


def test_open_access_is_the_default_and_warns_once_at_start(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        client = client_for()
    warnings = [record for record in caplog.records if "every request is accepted" in record.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert passed_the_gate(client.post("/score"))
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_openapi_declares_the_bearer_scheme_and_each_routes_scope(provider, jwt_client):
    document = jwt_client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": document["components"]["securitySchemes"]["bearer"]["description"]}  # fmt: skip
    assert document["paths"]["/score"]["post"]["security"] == [{"bearer": ["score"]}]
    assert document["paths"]["/v1/models"]["get"]["security"] == [{"bearer": ["read"]}]
    for open_route in ("/healthz", "/readyz"):
        assert "security" not in document["paths"][open_route]["get"]
        assert jwt_client.get(open_route).status_code != 401
    assert {"401", "403"} <= set(document["paths"]["/score"]["post"]["responses"])
    assert jwt_client.get("/docs").status_code == 200  # the page with the Authorize button needs no credential


def test_every_request_leaves_one_audit_line_without_the_credential(provider, jwt_client, caplog):
    token = provider.token(scope="read")
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        jwt_client.get("/v1/models", headers={**bearer(token), "X-Request-ID": "visit-1"})
        jwt_client.post("/score", headers={**bearer(token), "X-Request-ID": "visit-2"})
        jwt_client.post("/score", headers={"X-Request-ID": "visit-3"})
        jwt_client.get("/healthz", headers={"X-Request-ID": "visit-4"})
    audit = [record.getMessage() for record in caplog.records if record.getMessage().startswith("audit ")]
    assert audit == [
        "audit request_id=visit-1 subject=dr-meyer method=GET route=/v1/models status=200",
        "audit request_id=visit-2 subject=dr-meyer method=POST route=/score status=403",
        "audit request_id=visit-3 subject=- method=POST route=/score status=401",
        "audit request_id=visit-4 subject=- method=GET route=/healthz status=200",
    ]
    assert not any(token in record.getMessage() or token[-20:] in record.getMessage() for record in caplog.records)


async def call_without_credential(app, body_size: int, declared: bool = True) -> tuple[int, int, float]:
    """POST /score of `body_size` bytes straight into the ASGI app: the status, the body bytes the app asked
    for before answering, and the seconds to the answer."""
    chunk, pulled, status = b"\0" * 2**20, 0, None
    headers = [(b"content-type", b"multipart/form-data; boundary=x")]
    if declared:
        headers.append((b"content-length", str(body_size).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/score", "raw_path": b"/score", "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}  # fmt: skip

    async def receive():
        nonlocal pulled
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": pulled < body_size}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    start = time.perf_counter()
    await app(scope, receive, send)
    return status, pulled, time.perf_counter() - start


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_large_upload_without_a_credential_is_refused_before_any_of_it_is_read(provider, declared):
    app = create_app(ScoringService(CardsOnly(), Settings(**provider.settings())))
    status, pulled, seconds = asyncio.run(call_without_credential(app, 50 * 2**20, declared))
    assert status == 401 and pulled == 0
    assert seconds < 0.1
