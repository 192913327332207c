"""HTTPS: Ray Serve's proxy terminating TLS itself (`http_options.ssl_keyfile`, `ssl_certfile`), with a CA and a
server certificate for 127.0.0.1 and localhost made in the test (`cryptography`; nothing leaves the machine).

`python -m deepxray.profiles PROFILE --tls KEY CERT --out FILE` writes a serve profile with TLS on (no Ray needed
to check that). One application (the one-machine profile, 2 CPUs, `harness.served_application` with the key and
certificate) serves the module: a client that trusts the CA scores a hand over HTTPS; plain HTTP to the same port
gets no HTTP answer at all; a client that does not trust the CA fails the handshake. Serve and Ray are shut down
after the module.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deepxray.labels import JOINT_NAMES, RESEARCH_NOTICE
from deepxray.models.artifacts import read_card
from deepxray.profiles import ONE_MACHINE_PROFILE, ProfileError, read_profile, write_tls_profile
from loadtests import harness

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- certificates


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool, hosts: tuple[str, ...] = ()):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False),
            critical=True,
        )  # fmt: skip
    else:
        names = [x509.IPAddress(ipaddress.ip_address(h)) if h[0].isdigit() else x509.DNSName(h) for h in hosts]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pem(path: Path, item) -> Path:
    if isinstance(item, x509.Certificate):
        path.write_bytes(item.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            item.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return path


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA the service's certificate is signed by (what clients trust)
    key: Path  # the server's private key
    cert: Path  # the server's certificate: 127.0.0.1 and localhost, signed by `ca`
    other_ca: Path  # a CA that did not sign it
    other_key: Path  # a key that is not the certificate's


def make_pki(folder: Path) -> Pki:
    """A CA, a server certificate it signs for 127.0.0.1 and localhost (EC P-256 keys), and a stranger CA."""
    ca_key, other_key, server_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate("DeepXRay test CA", ca_key, "DeepXRay test CA", ca_key, ca=True)
    other = _certificate("Another CA", other_key, "Another CA", other_key, ca=True)
    server = _certificate("localhost", server_key, "DeepXRay test CA", ca_key, ca=False,
                          hosts=("localhost", "127.0.0.1"))  # fmt: skip
    return Pki(
        ca=_write_pem(folder / "ca.crt", ca),
        key=_write_pem(folder / "server.key", server_key),
        cert=_write_pem(folder / "server.crt", server),
        other_ca=_write_pem(folder / "other-ca.crt", other),
        other_key=_write_pem(folder / "other.key", other_key),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# ------------------------------------------------------------------------------ the profile with TLS (no Ray)


def test_tls_profile_is_the_profile_with_absolute_key_and_certificate(pki, tmp_path, monkeypatch):
    monkeypatch.chdir(pki.key.parent)  # relative paths, as the README gives them
    out = write_tls_profile(ONE_MACHINE_PROFILE, "server.key", "server.crt", tmp_path / "tls" / "serve_config.yaml")
    written = yaml.safe_load(out.read_text(encoding="utf-8"))
    source = yaml.safe_load(ONE_MACHINE_PROFILE.read_text(encoding="utf-8"))
    assert written["http_options"] == {**source["http_options"], "ssl_keyfile": str(pki.key),
                                       "ssl_certfile": str(pki.cert)}  # fmt: skip
    assert {k: v for k, v in written.items() if k != "http_options"} == {
        k: v for k, v in source.items() if k != "http_options"
    }
    assert out.read_text(encoding="utf-8").startswith(f"# Generated from {ONE_MACHINE_PROFILE}")
    options = read_profile(out).http_options  # what `serve run` hands to Serve's proxy
    assert (options.ssl_keyfile, options.ssl_certfile) == (str(pki.key), str(pki.cert))


@pytest.mark.parametrize(
    ("key", "cert", "says"),
    [
        ("other_key", "cert", "is not the private key of the certificate"),
        ("cert", "key", "are not a PEM certificate and its private key"),
        ("missing", "cert", "no such file"),
    ],
)
def test_tls_profile_refuses_a_key_that_is_not_the_certificates(pki, tmp_path, key, cert, says):
    paths = {**vars(pki), "missing": tmp_path / "missing.key"}
    out = tmp_path / "tls.yaml"
    with pytest.raises(ProfileError, match=says):
        write_tls_profile(ONE_MACHINE_PROFILE, paths[key], paths[cert], out)
    assert not out.exists()
    command = [sys.executable, "-m", "deepxray.profiles", str(ONE_MACHINE_PROFILE), "--tls", str(paths[key]),
               str(paths[cert]), "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (1, "") and says in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# ----------------------------------------------------------------------------------- served over HTTPS (Ray)


@pytest.fixture(scope="module")
def https_app(pki) -> str:
    """The application as serve_config.yaml runs it, with the models under test, serving HTTPS only with the
    test CA's server certificate; its https URL once `/readyz` answers (verified against the CA)."""
    folder = harness.models_dir()
    if not harness.models_present(folder):
        pytest.skip(f"no model artifacts in {folder}: train them or point DEEPXRAY_MODELS_DIR at some")
    settings, deployments = harness.profile(overrides={"models_dir": str(folder)})
    with harness.served_application(
        settings, deployments, cpus=2, ssl_keyfile=pki.key, ssl_certfile=pki.cert, ca_file=pki.ca
    ) as url:
        yield url


def models_trained() -> bool:
    """The cards say the models work on phantoms (else a contract refusal of a hand is accepted too)."""
    body_part = read_card(harness.models_dir() / "body_part").validation_metrics
    detector = read_card(harness.models_dir() / "joint_detection").validation_metrics
    return body_part.get("accuracy", 0.0) >= 0.9 and detector.get("within_quarter_mcp_distance", 0.0) >= 0.9


@pytest.mark.serve
@pytest.mark.slow
def test_a_client_trusting_the_ca_scores_a_hand_over_https(https_app, pki, radiographs):
    assert https_app.startswith("https://127.0.0.1:")
    with httpx.Client(base_url=https_app, verify=harness.client_verify(pki.ca), timeout=120) as client:
        response = client.post("/score", files={"xray": ("hand.png", radiographs.file("left_hand", "png"))})
        assert client.get("/healthz").status_code == 200
    if response.status_code == 422 and not models_trained():  # stand-in models may refuse a hand, by contract
        assert response.json()["error"] in ("not_a_hand", "joints_not_found", "implausible_joints")
        return
    assert response.status_code == 200, response.text
    answer = response.json()
    assert list(answer["scores"]) == list(JOINT_NAMES)
    assert all(answer["scores"][name] in range(6) for name in JOINT_NAMES)
    assert answer["notice"] == RESEARCH_NOTICE


@pytest.mark.serve
@pytest.mark.slow
def test_plain_http_to_the_https_port_gets_no_http_answer(https_app):
    """The proxy speaks TLS only on its port: a plain HTTP request is dropped in the handshake, unanswered (no
    redirect, no error page), so no part of a request or answer crosses the network in the clear."""
    plain = https_app.replace("https://", "http://", 1)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/healthz", timeout=30)
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{plain}/score", files={"xray": ("hand.png", b"not sent in the clear")}, timeout=30)


@pytest.mark.serve
@pytest.mark.slow
@pytest.mark.parametrize("trusted", ["the system's CAs", "another CA"])
def test_a_client_not_trusting_the_ca_fails_verification(https_app, pki, trusted):
    verify = harness.client_verify(None if trusted == "the system's CAs" else pki.other_ca)
    with pytest.raises(httpx.ConnectError) as refused:
        httpx.get(f"{https_app}/healthz", verify=verify, timeout=30)
    rejected = harness.certificate_rejected(refused.value)
    assert rejected is not None and rejected.verify_code == 20, rejected  # unable to get local issuer certificate
    with pytest.raises(RuntimeError, match="certificate not trusted"):  # the harness does not wait for it
        harness.wait_ready(https_app, timeout_s=30, ca_file=pki.other_ca)


@pytest.mark.serve
@pytest.mark.slow
def test_the_certificate_names_the_service_address(https_app, pki):
    """A client reaching the service as localhost verifies the same certificate (both names are in it)."""
    localhost = https_app.replace("127.0.0.1", "localhost", 1)
    context = ssl.create_default_context(cafile=str(pki.ca))
    assert httpx.get(f"{localhost}/readyz", verify=context, timeout=30).status_code == 200


# ------------------------------------------------------------------- the token issuer's key set over https (no Ray)


@pytest.fixture
def jwks_server(pki, tmp_path):
    """An https server (certificate signed by the test CA) answering the key set of a test identity provider."""
    import http.server
    import threading

    from identity import IdentityProvider

    provider = IdentityProvider(tmp_path)

    class KeySetHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = provider.jwks_path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), KeySetHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert, pki.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield provider, f"https://127.0.0.1:{server.server_address[1]}/jwks"
    server.shutdown()
    thread.join(10)


def jwt_client(provider, url: str):
    from fastapi.testclient import TestClient
    from test_auth import CardsOnly

    from deepxray.api.routes import create_app
    from deepxray.api.service import ScoringService
    from deepxray.settings import Settings

    settings = Settings(**provider.settings(jwks=url, jwks_refetch_s=0))
    return TestClient(create_app(ScoringService(CardsOnly(), settings)))


def test_a_key_set_over_https_verified_against_the_ca_checks_tokens_and_follows_a_rotation(
    jwks_server, pki, monkeypatch
):
    from identity import SigningKey

    provider, url = jwks_server
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))  # the hospital's own CA, as the README says
    client = jwt_client(provider, url)
    token = provider.token(scope="read")
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    rotated = SigningKey.make("ES256")
    provider.publish(rotated)  # the issuer replaces its key: the new kid is fetched, the old one refused
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {provider.token(rotated, scope='read')}"}
                      ).status_code == 200  # fmt: skip
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"


def test_a_key_set_whose_certificate_is_not_trusted_is_never_used(jwks_server, pki, monkeypatch):
    provider, url = jwks_server
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.other_ca))
    client = jwt_client(provider, url)
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {provider.token(scope='read')}"})
    assert response.status_code == 503 and response.json()["error"] == "auth_unavailable"
    assert "SSLCertVerificationError" in response.json()["detail"]
