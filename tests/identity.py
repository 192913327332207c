"""A small identity provider for tests: signing keys made in the test, their JWKS, and access tokens (RFC 9068)
signed with them. Nothing leaves the machine."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://id.example.org/realms/rheumatology"
AUDIENCE = "deepxray"


@dataclass
class SigningKey:
    kid: str
    algorithm: str  # RS256 or ES256
    private: object = field(repr=False)

    @classmethod
    def make(cls, algorithm: str = "RS256", kid: str | None = None) -> SigningKey:
        if algorithm.startswith(("RS", "PS")):
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            private = ec.generate_private_key(ec.SECP256R1())
        return cls(kid or uuid.uuid4().hex[:12], algorithm, private)

    def public_jwk(self) -> dict:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        jwk = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class IdentityProvider:
    """Keys by kid, a JWKS file of the published ones, and tokens."""

    def __init__(self, folder: Path, *keys: SigningKey):
        self.jwks_path = folder / "jwks.json"
        self.keys = list(keys) or [SigningKey.make("RS256")]
        self.publish(*self.keys)

    def publish(self, *keys: SigningKey) -> None:
        """Writes the JWKS with exactly these public keys (a rotation replaces the file, as an issuer would)."""
        staging = self.jwks_path.with_suffix(".new")
        staging.write_text(json.dumps({"keys": [key.public_jwk() for key in keys]}), encoding="utf-8")
        staging.replace(self.jwks_path)

    def token(
        self,
        key: SigningKey | None = None,
        scope: str | None = "score read",
        lifetime_s: float = 300,
        not_before_s: float | None = None,
        headers: dict | None = None,
        **claims,
    ) -> str:
        """An access token signed by `key` (default: the first key) with `iss`, `aud`, `sub`, `exp`, `iat`,
        `scope`; `claims` add or replace claims (None removes one)."""
        key = key or self.keys[0]
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "dr-meyer", "iat": now, "exp": now + int(lifetime_s)}
        if scope is not None:
            body["scope"] = scope
        if not_before_s is not None:
            body["nbf"] = now + int(not_before_s)
        body.update(claims)
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode(body, key.private, algorithm=key.algorithm, headers={"kid": key.kid, **(headers or {})})

    def settings(self, **overrides) -> dict:
        """The service's auth settings for this provider."""
        return {"auth_mode": "jwt", "jwks": str(self.jwks_path), "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE,
                **overrides}  # fmt: skip
