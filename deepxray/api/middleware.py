"""Request ids and the audit line: every request gets an id, every answer carries it (JSON `request_id`, header
`X-Request-ID`), and every request leaves one audit line in the log when it is answered:

    audit request_id=3f2a... subject=lab-a method=POST route=/score status=200

`subject` is who the access control let in (a token's `sub`, an API key's id, `anonymous` when access is open,
`-` when nobody was let in); `route` is the route's template, never a query string. Never a credential, a
header's value or anything of the upload.

The client's `X-Request-ID` is used when it is a plain token, else a new id is made. Behind Ray's proxy the
proxy itself assigns one (a uuid4) and echoes that header, and the same id tags Serve's own log lines for the
request. Anything unforeseen below the routes becomes a JSON 500 carrying the id, with the traceback (but not
the exception's message, which might quote the upload) in the log.
"""

from __future__ import annotations

import re
import traceback
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse

from deepxray.api.errors import ApiError
from deepxray.logs import get_logger

# A client's request id is used as given only when it is a plain token (it goes into logs and headers).
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def request_id_of(request: Request) -> str:
    return getattr(request.state, "request_id", "") or uuid.uuid4().hex


def error_response(exc: BaseException, request_id: str) -> JSONResponse:
    """The JSON answer for an exception: its own status and body for an ApiError, a 500 for anything else."""
    if not isinstance(exc, ApiError):
        log_unexpected(exc, request_id)
        exc = ApiError(f"Something went wrong on our side; quote request id {request_id} when reporting it.")
    return JSONResponse({**exc.to_json(), "request_id": request_id}, status_code=exc.status, headers=exc.headers)


def log_unexpected(exc: BaseException, request_id: str) -> None:
    # The exception's message is left out: it might quote a piece of the upload. Type and frames are enough.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    get_logger().error("unexpected error request_id=%s type=%s\n%s", request_id, type(exc).__name__, frames)


def route_of(scope) -> str:
    """The route's template (`/score`, `/v1/cases/{case_id}`), or the path, cut short, of a request no route took."""
    route = scope.get("route")
    path = getattr(route, "path", None) or scope.get("path", "")
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in path[:100])


class RequestIdMiddleware:
    """Gives every request an id (`request.state.request_id`), puts it on every answer, turns an unexpected
    exception into a JSON 500 that carries it, and writes the request's audit line."""

    def __init__(self, app, proxy_echoes_request_id: bool = False):
        self.app = app
        self.proxy_echoes_request_id = proxy_echoes_request_id

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        # Ray's proxy appends X-Request-ID (the one it passed in) to every answer; add ours only when it won't.
        add_header = not (self.proxy_echoes_request_id and incoming == request_id)
        started, status = False, 0

        async def send_with_id(message):
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                if add_header:
                    MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:
                log_unexpected(exc, request_id)
                raise
            await error_response(exc, request_id)(scope, receive, send_with_id)
        finally:
            get_logger().info(
                "audit request_id=%s subject=%s method=%s route=%s status=%d",
                request_id, scope["state"].get("subject", "-"), scope["method"], route_of(scope), status,
            )  # fmt: skip
