"""Access control in the ingress: who may call which route (Ray Serve has no data-plane authentication).

`auth_mode` (deepxray.settings) chooses how a request's `Authorization: Bearer <credential>` is checked:

- `none`: not at all; every request is accepted (a laptop, the proxy on 127.0.0.1). The ingress logs a warning at
  start.
- `api_key`: the credential is a key of the keys file (`deepxray.api.keys`); its scopes are the file's.
- `jwt`: the credential is an OAuth 2.0 access token (`deepxray.api.tokens`); its scopes are its `scope` or `scp`
  claim, with `scope_prefix` removed.

Routes ask for a scope (`score` for POST /score, `read` for the model cards and stored cases, `review` for
corrections); `/healthz`, `/readyz` and the docs stay open. Answers follow RFC 6750: 401 with `WWW-Authenticate:
Bearer realm="DeepXRay"` for a missing credential (no error code, as §3.1 asks), with `error="invalid_request"`
for a malformed header and `error="invalid_token"` for a credential that does not pass; 403 with
`error="insufficient_scope"` and the scope needed. The check is a route dependency, so it runs before the route
reads a byte of the upload. Who called (the token's `sub` or the key id) goes to `request.state.subject` for the
audit line (`deepxray.api.middleware`); the credential itself is never logged.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency's `Annotated` parameter at run time, and
# the scheme in it is local to `Access.requires`.

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from deepxray.api.errors import ApiError
from deepxray.api.keys import SCOPES, ApiKeyFile
from deepxray.api.tokens import InvalidTokenError, KeySet, TokenValidator, token_scopes, token_subject
from deepxray.settings import Settings

REALM = "DeepXRay"
ANONYMOUS = "anonymous"
# RFC 6750's b64token: what a bearer credential may consist of.
_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)
OPEN_WARNING = (
    "auth_mode is none: every request is accepted without a credential. Keep the service on 127.0.0.1, or set "
    "auth_mode to api_key or jwt (DEEPXRAY_AUTH_MODE) before anyone else can reach it."
)


def challenge(error: str | None = None, detail: str | None = None, scope: str | None = None) -> dict[str, str]:
    """The `WWW-Authenticate` header of RFC 6750 §3."""
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if detail:
        parts.append(f'error_description="{detail.replace(chr(34), chr(39))}"')
    if scope:
        parts.append(f'scope="{scope}"')
    return {"WWW-Authenticate": "Bearer " + ", ".join(parts)}


class MissingCredentialError(ApiError, status=401, code="missing_credential"):
    default_detail = "This endpoint needs a credential: send it as 'Authorization: Bearer <token or API key>'."

    def __init__(self):
        super().__init__(headers=challenge())


class MalformedCredentialError(ApiError, status=401, code="invalid_request"):
    default_detail = "The Authorization header is not 'Bearer <credential>' with one well-formed credential."

    def __init__(self):
        super().__init__(headers=challenge("invalid_request", self.default_detail))


class InsufficientScopeError(ApiError, status=403, code="insufficient_scope"):
    def __init__(self, scope: str, subject: str):
        super().__init__(
            f"The credential of {subject} lacks the scope '{scope}' this endpoint needs.",
            challenge("insufficient_scope", f"needs scope {scope}", scope),
        )


@dataclass(frozen=True)
class Principal:
    """Who a request comes from, and what it may do."""

    subject: str
    scopes: frozenset[str]


class Access:
    """The access control of one ingress replica (built from its settings at start)."""

    def __init__(self, settings: Settings):
        self.mode = settings.auth_mode
        self.prefix = settings.scope_prefix
        self.keys = ApiKeyFile(settings.api_keys_file, settings.retry_after_s) if self.mode == "api_key" else None
        self.tokens = None
        if self.mode == "jwt":
            key_set = KeySet(settings.jwks, settings.jwks_cache_s, settings.jwks_refetch_s)
            self.tokens = TokenValidator(key_set, settings.jwt_issuer, settings.jwt_audience, settings.jwt_leeway_s)

    @property
    def is_open(self) -> bool:
        return self.mode == "none"

    async def principal(self, request: Request) -> Principal:
        """Who sent `request`; an ApiError (401, or 503 when keys cannot be read) when the credential fails."""
        if self.is_open:
            return Principal(ANONYMOUS, frozenset(SCOPES))
        headers = request.headers.getlist("authorization")
        if not headers:
            raise MissingCredentialError()
        match = _BEARER.fullmatch(headers[0].strip()) if len(headers) == 1 else None
        if match is None:
            raise MalformedCredentialError()
        credential = match.group(1)
        if self.keys is not None:
            key = self.keys.find(credential)
            if key is None:
                raise InvalidTokenError(
                    "The API key is not one this service knows (unknown or revoked).",
                    challenge("invalid_token", "unknown or revoked API key"),
                )
            return Principal(key.key_id, key.scopes)
        try:
            claims = await self.tokens.claims(credential)
        except InvalidTokenError as error:
            error.headers = {**error.headers, **challenge("invalid_token", error.detail)}
            raise
        return Principal(token_subject(claims), token_scopes(claims, self.prefix))

    def requires(self, scope: str):
        """The route dependency that lets a request through only with `scope`; it declares the bearer scheme in
        the OpenAPI document (so /docs has an Authorize button) unless access is open."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope}")

        async def check(request: Request) -> Principal:
            principal = await self.principal(request)
            request.state.subject = principal.subject
            if scope not in principal.scopes:
                raise InsufficientScopeError(self.prefix + scope, principal.subject)
            return principal

        if self.is_open:
            return check
        scheme = HTTPBearer(
            scheme_name="bearer",
            bearerFormat="JWT" if self.mode == "jwt" else "API key",
            description=f"An {'OAuth 2.0 access token (JWT)' if self.mode == 'jwt' else 'API key'}; "
            f"scopes: {', '.join(self.prefix + s for s in SCOPES)}.",
            auto_error=False,
        )

        async def declared(
            request: Request,
            _: Annotated[HTTPAuthorizationCredentials | None, Security(scheme, scopes=[self.prefix + scope])],
        ) -> Principal:
            return await check(request)  # the header is parsed there, strictly; the scheme only declares it

        return declared
