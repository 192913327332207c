"""The `--url` engine: the films posted to a running service's `/score`, at most `concurrency` at a time, each
film's rows coming back as it finishes.

An event loop in a thread of its own runs `concurrency` workers over one shared list of films; each worker reads
a file, posts it (multipart field `xray`, named `image`: a file's name may hold patient data, so it never leaves
this machine) with `Authorization: Bearer <token>` when a token is given, and puts the film's rows
(`deepxray.batch.rows.film_rows`, as the Ray Data engine makes them) on a queue that the generator hands on. When
the consumer stops early (Ctrl-C, an error), closing the generator cancels the workers, closes the client and
waits for the thread.

What an answer means for the run:
- 200, or a 4xx about the film (400, 413, 415, 422): the film's rows (scored, or refused with the API's error);
- 503 (the service is full, or a model is restarting) or 429: wait its `Retry-After` (capped; without one, a
  growing backoff) and post again, up to `busy_tries` answers; then a `failed` row with the last answer;
- a connection that cannot be made or is lost, or no answer within `timeout_s`: post again after a growing
  backoff, up to `retries` more times; then a `failed` row (`unreachable`, `connection_lost` or `timeout`);
- other 5xx (a stage timeout, a crash): a `failed` row at once;
- 401 or 403 (the credential), 404 or 405 (not a DeepXRay service at that URL): every film would get the same
  answer, so the run stops at once with one sentence (a ValueError, printed by the CLI as `deepxray: error:`).

The token is sent to the service only: it is in no row, message or log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from deepxray.batch.context import study_context
from deepxray.batch.inputs import Film, read_film
from deepxray.batch.rows import film_rows

THREAD_NAME = "deepxray-score-remote"
DEFAULT_CONCURRENCY = 4  # films in flight: the one-machine ingress scores 4 at once (max_scoring)
BUSY_STATUSES = frozenset({429, 503})
DETAIL_CHARS = 200
_DONE = object()


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait for the service, and how often to try again."""

    timeout_s: float = 120.0  # one request, from connecting to the last byte of the answer
    connect_timeout_s: float = 10.0
    retries: int = 3  # more tries after a connection error or a timeout
    backoff_s: float = 1.0  # the first wait after one; doubled each time, up to max_backoff_s (with jitter)
    max_backoff_s: float = 20.0
    busy_tries: int = 30  # 503 (or 429) answers before a film is given up as failed
    max_retry_after_s: float = 30.0  # a longer Retry-After is cut to this
    min_retry_after_s: float = 0.1  # a `Retry-After: 0` is not a busy loop

    def backoff(self, attempt: int) -> float:
        """The wait before try `attempt + 1`: half to all of backoff_s * 2**(attempt - 1), capped."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


class ServiceRefusedError(ValueError):
    """The service answered in a way that every film would get (a ValueError: the CLI prints it as one line)."""


class AccessRefusedError(ServiceRefusedError):
    """The service refused the credential (401) or its scope (403)."""


def access_refused(
    url: str, status: int, body: dict, token: str | None, refused: str = "to score", then: str = "stopped; "
) -> AccessRefusedError:
    """The one-line error for a 401 or 403 (the service's detail never quotes the credential, nor does this):
    "the service at URL refused {refused} (401 invalid_token: ...); {then}{advice}"."""
    code = body.get("error") or ("unauthorized" if status == 401 else "forbidden")
    detail = str(body.get("detail") or "").strip()
    why = f"{status} {code}" + (f": {detail}" if detail else "")
    if status == 403:
        advice = "use a token or API key with the scope 'score' (--token or DEEPXRAY_TOKEN)"
    elif token:
        advice = "check the token (--token or DEEPXRAY_TOKEN): it may have expired or be meant for another service"
    else:
        advice = "give a token or API key with --token or DEEPXRAY_TOKEN"
    return AccessRefusedError(f"the service at {url} refused {refused} ({why}); {then}{advice}")


def not_the_service(url: str, status: int, body: dict) -> ServiceRefusedError:
    code = body.get("error") or f"http_{status}"
    return ServiceRefusedError(
        f"{url}/score answered {status} {code}: --url must be the base URL of a DeepXRay service "
        "(e.g. http://127.0.0.1:8000, without /score); stopped"
    )


def check_url(url: str) -> str:
    """`url` without a trailing slash; a ValueError unless it is an http(s) URL with a host."""
    base = (url or "").strip().rstrip("/")
    try:
        parsed = httpx.URL(base)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"--url {url!r} is not an http(s) URL of a service (e.g. http://127.0.0.1:8000)")
    return base


def retry_after_s(value: str | None) -> float | None:
    """Seconds a `Retry-After` header asks for (delay-seconds or an HTTP date); None when absent or unreadable."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def answer_body(response: httpx.Response) -> dict:
    """The answer's JSON object; for anything else (a proxy's text or HTML) an error body in the API's shape."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    text = " ".join(response.text.split())[:DETAIL_CHARS]
    return {"error": f"http_{response.status_code}", "detail": text}


class _Scorer:
    """The films posted from an event loop in a thread of its own; rows, an exception, then _DONE on `results`."""

    def __init__(self, films, url: str, token: str | None, salt: str | None, concurrency: int, policy, transport):
        self.films, self.url, self.token, self.salt = films, url, token, salt
        self.concurrency, self.policy, self.transport = concurrency, policy, transport
        self.results: queue.Queue = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.main = self.loop.create_task(self._score_all())
        self.thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)

    # -------------------------------------------------------------------------------------- the loop's thread

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.main)
        except BaseException:  # cancelled by stop(), or an error already put on the queue
            pass
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            finally:
                self.loop.close()
                self.results.put(_DONE)

    async def _score_all(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        timeout = httpx.Timeout(
            self.policy.timeout_s, connect=min(self.policy.connect_timeout_s, self.policy.timeout_s)
        )
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        films = iter(self.films)  # shared by the workers: each takes the next film when it is free
        try:
            async with (
                httpx.AsyncClient(
                    base_url=self.url, headers=headers, timeout=timeout, limits=limits, transport=self.transport
                ) as client,
                asyncio.TaskGroup() as group,
            ):
                for _ in range(min(self.concurrency, len(self.films))):
                    group.create_task(self._worker(client, films))
        except* ServiceRefusedError as errors:
            self.results.put(errors.exceptions[0])
        except* Exception as errors:  # a bug: the consumer raises it
            self.results.put(errors.exceptions[0])

    async def _worker(self, client: httpx.AsyncClient, films: Iterator[tuple[Film, str | None]]) -> None:
        for film, image in films:
            self.results.put(await self.score(client, film, image))

    async def score(self, client: httpx.AsyncClient, film: Film, image_id: str | None) -> list[dict]:
        """The rows of one film (as `deepxray.batch.local.FilmScorer.score` makes them)."""
        start = time.perf_counter()
        data, unreadable = await asyncio.to_thread(read_film, film)
        if unreadable:
            return film_rows(film, image_id, 400, unreadable, time.perf_counter() - start)
        status, body = await self.answer(client, data)
        context = await asyncio.to_thread(study_context, data, self.salt)
        try:
            return film_rows(film, image_id, status, body, time.perf_counter() - start, context)
        except (KeyError, TypeError, ValueError, AttributeError):  # a 200 that is not a `/score` answer
            body = {
                "error": "bad_answer",
                "detail": "The service answered 200 with something that is not a /score answer.",
            }
            return film_rows(film, image_id, 502, body, time.perf_counter() - start, context)

    async def answer(self, client: httpx.AsyncClient, data: bytes) -> tuple[int, dict]:
        """The service's status and body for `data`, after the retries the policy allows; status 0 when no
        answer came (the body then says why, in the API's error shape)."""
        policy = self.policy
        failures = busy = 0
        first = time.perf_counter()
        while True:
            try:
                async with asyncio.timeout(policy.timeout_s):
                    response = await client.post("/score", files={"xray": ("image", data, "application/octet-stream")})
            except (httpx.TransportError, TimeoutError) as error:
                failures += 1
                if failures > policy.retries:
                    return 0, self.no_answer(error, failures)
                await asyncio.sleep(policy.backoff(failures))
                continue
            status, body = response.status_code, answer_body(response)
            if status in (401, 403):
                raise access_refused(self.url, status, body, self.token)
            if status in (404, 405):
                raise not_the_service(self.url, status, body)
            if status not in BUSY_STATUSES:
                return status, body
            busy += 1
            if busy >= policy.busy_tries:
                detail = str(body.get("detail") or "").strip()
                gave_up = f"Still busy after {busy} tries in {time.perf_counter() - first:.0f} s"
                return 503, {**body, "detail": f"{gave_up}; the last answer: {detail}" if detail else f"{gave_up}."}
            wait = retry_after_s(response.headers.get("retry-after"))
            wait = policy.backoff(busy) if wait is None else max(wait, policy.min_retry_after_s)
            await asyncio.sleep(min(wait, policy.max_retry_after_s))

    def no_answer(self, error: BaseException, tries: int) -> dict:
        after = f"gave up after {tries} tries"
        if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
            reason = str(error).strip() or type(error).__name__
            return {"error": "unreachable", "detail": f"The service could not be reached ({reason}); {after}."}
        if isinstance(error, httpx.TimeoutException | TimeoutError):
            return {
                "error": "timeout",
                "detail": f"The service did not answer within {self.policy.timeout_s:g} s; {after}.",
            }
        reason = str(error).strip() or type(error).__name__
        return {"error": "connection_lost", "detail": f"The connection to the service failed ({reason}); {after}."}

    # ---------------------------------------------------------------------------------------- the caller's side

    def stop(self) -> None:
        """Cancel what is in flight (the client is closed on the way out) and wait for the thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed already: everything finished
            self.loop.call_soon_threadsafe(self.main.cancel)
        self.thread.join(timeout=30)


def score_films_via_service(
    films: list[tuple[Film, str | None]],
    url: str,
    token: str | None = None,
    salt: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    policy: RetryPolicy | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Iterator[list[dict]]:
    """The rows of each film (with its image id), a film at a time as the service at `url` answers, at most
    `concurrency` films in flight. ServiceRefusedError (a ValueError) stops it when the service refuses the
    credential or is not a DeepXRay service; closing the generator early cancels what is in flight."""
    base = check_url(url)
    if concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1 (got {concurrency})")
    if not films:
        return
    scorer = _Scorer(list(films), base, token, salt, concurrency, policy or RetryPolicy(), transport)
    scorer.thread.start()
    try:
        while True:
            try:
                item = scorer.results.get(timeout=0.5)  # a timeout, so that Ctrl-C is seen at once
            except queue.Empty:
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        scorer.stop()
