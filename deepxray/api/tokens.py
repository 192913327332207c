"""OAuth 2.0 bearer access tokens (RFC 6750) as JWTs (RFC 9068), checked with PyJWT against the issuer's JWKS.

What a token must be to pass: signed with an asymmetric algorithm (`ALGORITHMS`: never `none`, never an HMAC,
so a public key can never be used as a shared secret) by a key of the issuer's JSON Web Key Set whose type fits
that algorithm, with `exp`, `iss` (= `jwt_issuer`) and `aud` (= `jwt_audience`) present and right, and `exp`,
`nbf` and `iat` within `jwt_leeway_s` of this machine's clock.

The key set (`jwks`) is a file, re-read when it changes, or an https URL, fetched in a worker thread (never on
the event loop), kept `jwks_cache_s` and fetched again at once when a token names a key id the set does not have
(the issuer rotated its keys), at most every `jwks_refetch_s`. A key that left the set is refused from the next
fetch on.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt

from deepxray.api.errors import ApiError

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
FETCH_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 1 << 20


class InvalidTokenError(ApiError, status=401, code="invalid_token"):
    """A bearer token that does not pass (the detail says why, never quoting the token)."""


class KeySetUnavailableError(ApiError, status=503, code="auth_unavailable"):
    """The issuer's key set cannot be had right now: tokens cannot be checked, so nobody is let in."""


def fetch_url(url: str) -> dict:
    """The JSON at an https URL, verified against the system's certificate authorities (`SSL_CERT_FILE` names
    another bundle, e.g. a hospital's own CA)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S, context=ssl.create_default_context()) as answer:
        return json.loads(answer.read(MAX_JWKS_BYTES + 1)[:MAX_JWKS_BYTES])


class KeySet:
    """The issuer's signing keys by key id, from a file or an https URL (see the module's docstring)."""

    def __init__(
        self, source: str, cache_s: float, refetch_s: float, fetch: Callable[[str], dict] = fetch_url,
        clock: Callable[[], float] = time.monotonic,
    ):  # fmt: skip
        self.source = source
        self.is_url = source.startswith(("https://", "http://"))
        if source.startswith("http://"):
            raise ValueError(f"jwks must be a file or an https:// URL, not plain http ({source})")
        self.path = None if self.is_url else Path(source).expanduser().resolve()
        if self.path is not None and not self.path.is_file():
            raise ValueError(f"jwks file {self.path} does not exist")
        self.cache_s, self.refetch_s, self.fetch, self.clock = cache_s, refetch_s, fetch, clock
        self._keys: dict[str | None, dict] = {}
        self._stamp: Any = None  # the file's (mtime, size, inode), or the time of the last fetch
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> dict | None:
        """The JWK (a dict) that `kid` names; a token without `kid` gets the set's only key, if it has just one."""
        if self.path is not None:
            self._read_file_if_changed()
        else:
            async with self._lock:  # one fetch at a time; requests waiting on it use its result
                age = None if self._stamp is None else self.clock() - self._stamp
                unknown = kid is not None and kid not in self._keys
                if age is None or age > self.cache_s or (unknown and age >= self.refetch_s):
                    await self._fetch()
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _read_file_if_changed(self) -> None:
        try:
            stat = self.path.stat()
            stamp = stat.st_mtime_ns, stat.st_size, stat.st_ino
        except OSError:
            raise KeySetUnavailableError("The token issuer's key set is missing on the server; retry later.") from None
        if stamp != self._stamp:
            try:
                self._keys = parse_key_set(json.loads(self.path.read_text(encoding="utf-8")))
            except (ValueError, OSError) as error:
                self._keys = {}
                raise KeySetUnavailableError(
                    f"The token issuer's key set on the server cannot be read ({error}); retry later."
                ) from None
            self._stamp = stamp

    async def _fetch(self) -> None:
        self._stamp = self.clock()  # a failed fetch waits its turn too: no hammering of a failing issuer
        try:
            self._keys = parse_key_set(await asyncio.to_thread(self.fetch, self.source))
        except Exception as error:  # network, TLS, JSON or key errors: all mean "cannot check tokens now"
            if not self._keys:
                cause = getattr(error, "reason", error)  # urllib wraps TLS and connection errors in URLError
                raise KeySetUnavailableError(
                    f"The token issuer's key set could not be fetched ({type(cause).__name__}); retry later.",
                    {"Retry-After": str(max(1, round(self.refetch_s)))},
                ) from None
            # The keys of the last good fetch stay in use until the issuer answers again.


def parse_key_set(data: dict) -> dict[str | None, dict]:
    """Signing keys of a JWKS document by key id (keys for encryption, or of a type PyJWT cannot use, skipped)."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("a JWKS is a JSON object with a list of keys")
    keys = {}
    for item in data["keys"]:
        if not isinstance(item, dict) or item.get("use", "sig") != "sig":
            continue
        try:
            jwt.PyJWK(item)  # a key PyJWT can use
        except jwt.PyJWTError:
            continue
        keys[item.get("kid")] = item
    if not keys:
        raise ValueError("the JWKS holds no signing key this service can use")
    return keys


_REFUSALS = (
    (jwt.ExpiredSignatureError, "The token has expired."),
    (jwt.ImmatureSignatureError, "The token is not valid yet (its nbf or iat is in the future)."),
    (jwt.InvalidIssuerError, "The token was issued by another issuer than the one this service trusts."),
    (jwt.InvalidAudienceError, "The token is meant for another audience than this service."),
    (jwt.InvalidSignatureError, "The token's signature does not verify."),
    (jwt.DecodeError, "The credential is not a well-formed JWT."),
)


class TokenValidator:
    """Checks a JWT and returns its claims, or raises `InvalidTokenError` saying why."""

    def __init__(self, key_set: KeySet, issuer: str, audience: str, leeway_s: float):
        self.key_set, self.issuer, self.audience, self.leeway_s = key_set, issuer, audience, leeway_s

    async def claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidTokenError("The credential is not a well-formed JWT.") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise InvalidTokenError(
                f"The token is signed with an algorithm this service does not accept; it accepts {', '.join(ALGORITHMS)}."
            )
        jwk = await self.key_set.key(header.get("kid"))
        if jwk is None:
            raise InvalidTokenError("The token is signed by a key the issuer does not publish (unknown kid).")
        if jwk.get("alg", algorithm) != algorithm:
            raise InvalidTokenError("The token's algorithm is not the one its key is published for.")
        try:
            key = jwt.PyJWK(jwk, algorithm=algorithm).key  # raises when the key type does not fit the algorithm
            return jwt.decode(
                token, key, algorithms=[algorithm], audience=self.audience, issuer=self.issuer, leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )  # fmt: skip
        except jwt.MissingRequiredClaimError as error:
            raise InvalidTokenError(f"The token lacks the required {error.claim} claim.") from None
        except jwt.PyJWTError as error:
            detail = next((text for kind, text in _REFUSALS if isinstance(error, kind)), "The token is not valid.")
            raise InvalidTokenError(detail) from None


def token_scopes(claims: dict[str, Any], prefix: str) -> frozenset[str]:
    """The service's scopes in a token: the space-separated `scope` claim (RFC 9068) or the `scp` list, each
    with `prefix` (e.g. 'deepxray:') removed; scopes without the prefix belong to other services."""
    raw = claims.get("scope", claims.get("scp", ""))
    names = raw.split() if isinstance(raw, str) else [name for name in raw if isinstance(name, str)]
    return frozenset(name[len(prefix) :] for name in names if name.startswith(prefix) and len(name) > len(prefix))


def token_subject(claims: dict[str, Any]) -> str:
    """Who the token speaks for: `sub`, else the client (`client_id`, `azp`) of a client-credentials token."""
    for claim in ("sub", "client_id", "azp"):
        if isinstance(claims.get(claim), str) and claims[claim]:
            return claims[claim]
    return "unknown"
