"""The case store in the ingress: keeping a scored film, drawing its picture, and the review routes.

`CaseDesk` sits between the HTTP layer and `deepxray.cases.store.CaseStore` (SQLite or PostgreSQL, synchronous):
every store call runs in a thread, so the event loop keeps serving. After `POST /score`, `CaseDesk.additions` makes
the picture of the film once (`deepxray.cases.overlay.viewing_image`: windowed, downscaled) from the pixels the
pipeline already decoded, and uses it both for the stored preview and for `?overlay=true`.

Routes (`add_case_routes`; scopes from `deepxray.api.auth`): `GET /v1/cases` and `GET /v1/cases/{id}`,
`GET /v1/cases/{id}/overlay.png` and `GET /v1/cases/{id}/similar` need `read`; `PUT /v1/cases/{id}/review` and
`DELETE /v1/cases/{id}` need `review`, and the reviewer is the authenticated subject. A service that keeps no
cases answers them 404 `cases_not_kept`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
from datetime import datetime
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request, Response

from deepxray.api.errors import CaseNotFoundApiError, CasesNotKeptError, InvalidReviewApiError, NoImageError
from deepxray.api.middleware import request_id_of
from deepxray.api.schemas import (
    CaseAnswer,
    CaseListAnswer,
    DeletedAnswer,
    ErrorAnswer,
    JointName,
    ReviewRequest,
    SimilarAnswer,
)
from deepxray.batch.context import study_context
from deepxray.cases.records import (
    CaseNotFoundError,
    FilmImage,
    InvalidReviewError,
    JointRecord,
    JointReview,
    NewCase,
    new_case_id,
)
from deepxray.labels import RESEARCH_NOTICE
from deepxray.pipeline import FilmCapture
from deepxray.settings import Settings


class CaseDesk:
    """The ingress's side of the case store, and the pictures of scored films.

    Args:
        store: An open `CaseStore`, or None when the service keeps no cases (`open_desk`).
        settings: What of the film to keep (`store_images`, `preview_max_side`) and the pseudonyms' salt.
    """

    def __init__(self, store, settings: Settings):
        self.store = store
        self.settings = settings

    def additions(self, answer: dict, capture: FilmCapture, data: bytes, draw: bool) -> dict:
        """What the ingress adds to a scored answer: `case_id` (when it keeps cases) and `overlay` (`draw`: the
        PNG, base64). Runs in a thread: windowing, drawing, PNG encoding and the database write all block.
        """
        from deepxray.cases.overlay import overlay_png, viewing_image

        added: dict[str, Any] = {}
        keep = self.store is not None
        kind = self.settings.store_images if keep else "none"
        view, scale = (None, 1.0)
        if draw or kind == "preview":
            view, scale = viewing_image(capture.pixels, self.settings.preview_max_side)
        if keep:
            added["case_id"] = new_case_id()
            image = self._film_image(kind, capture.pixels, view, scale)
            self.store.add(self._new_case({**answer, **added}, capture, data, image))
        if draw:
            png = overlay_png(view, scale, answer)
            added["overlay"] = {"media_type": "image/png", "base64": base64.b64encode(png).decode("ascii")}
        return added

    def _film_image(self, kind: str, pixels: np.ndarray, view, scale: float) -> FilmImage | None:
        from deepxray.cases.overlay import film_image, preview_image

        if kind == "none":
            return None
        if kind == "preview":
            return preview_image(view, scale)
        return film_image(pixels, "original", self.settings.preview_max_side)

    def _new_case(self, answer: dict, capture: FilmCapture, data: bytes, image: FilmImage | None) -> NewCase:
        joints = [
            JointRecord(
                hand=index,
                laterality=hand["laterality"],
                joint=name,
                score=joint["score"],
                probabilities=joint["probabilities"],
                center=tuple(joint["center"]),
                embedding=_float32(capture.embeddings[index].get(name) if index < len(capture.embeddings) else None),
            )
            for index, hand in enumerate(answer["hands"])
            for name, joint in hand["joints"].items()
        ]
        # Only the pseudonyms of a DICOM header's study and series (salted hashes; none without a salt).
        context = study_context(data, self.settings.pseudonym_salt)
        height, width = capture.pixels.shape[:2]
        return NewCase(
            answer=answer,
            models=answer["models"],
            film_size=(width, height),
            joints=joints,
            image=image,
            study_id=context["study_id"],
            series_id=context["series_id"],
            case_id=answer["case_id"],
        )


def _float32(embedding: np.ndarray | None) -> np.ndarray | None:
    return None if embedding is None else np.asarray(embedding, dtype=np.float32)


def open_desk(settings: Settings) -> CaseDesk:
    """The case desk over the store `settings` name (no store when `store_cases` is off)."""
    if not settings.store_cases:
        return CaseDesk(None, settings)
    from deepxray.cases.store import CaseStore

    return CaseDesk(CaseStore.open(settings.case_store_url()), settings)


@contextlib.contextmanager
def _store_errors():
    """The store's own exceptions as the API's answers."""
    try:
        yield
    except CaseNotFoundError as exc:
        raise CaseNotFoundApiError(str(exc) or "There is no case with this id.") from None
    except InvalidReviewError as exc:
        raise InvalidReviewApiError(str(exc)) from None


def case_json(case, request_id: str) -> dict:
    """A `StoredCase` as the `CaseAnswer` of the routes."""
    return {
        "case_id": case.case_id,
        "created_at": case.created_at,
        "models": case.models,
        "answer": case.answer,
        "image": case.image_kind,
        "joints": [
            {
                "hand": joint.hand,
                "laterality": joint.laterality,
                "joint": joint.joint,
                "score": joint.score,
                "probabilities": joint.probabilities,
                "center": list(joint.center),
                "review": _review_json(joint.review),
            }
            for joint in case.joints
        ],
        "reviewed": case.reviewed,
        "reviewed_at": case.reviewed_at,
        "reviewer": case.reviewer,
        "history": [dataclasses.asdict(event) for event in case.history],
        "request_id": request_id,
        "notice": RESEARCH_NOTICE,
    }


def _review_json(review) -> dict | None:
    if review is None:
        return None
    return {"decision": review.decision, "score": review.score, "comment": review.comment,
            "reviewer": review.reviewer, "at": review.reviewed_at}  # fmt: skip


def _similar_json(found) -> dict:
    return {"case_id": found.case_id, "hand": found.hand, "laterality": found.laterality, "joint": found.joint,
            "score": found.score, "review_score": found.reviewed_score, "decision": found.decision,
            "similarity": round(float(found.similarity), 4)}  # fmt: skip


def reviewed_scores(case) -> dict[tuple[int, str], int]:
    """(hand, joint) -> reviewed grade, for the joints of a case that have a review (drawn on its picture)."""
    return {(joint.hand, joint.joint): joint.review.score for joint in case.joints if joint.review is not None}


_NOT_FOUND = {404: {"model": ErrorAnswer, "description": "No such case, or the service keeps no cases"}}


def add_case_routes(app: FastAPI, desk: CaseDesk, access, auth_errors: dict[int, str]) -> None:
    """The review API on `app`; without a store every route answers 404 `cases_not_kept`."""

    def responses(*statuses: int) -> dict:
        found = {s: {"model": ErrorAnswer, "description": text} for s, text in auth_errors.items()}
        return {**found, **_NOT_FOUND, **{s: {"model": ErrorAnswer} for s in statuses}}

    async def run(call, *args):
        if desk.store is None:
            raise CasesNotKeptError()
        with _store_errors():
            return await asyncio.to_thread(call, desk.store, *args)

    read = [Depends(access.requires("read"))]
    review = [Depends(access.requires("review"))]

    @app.get("/v1/cases", summary="Stored cases", response_model=CaseListAnswer, responses=responses(),
             dependencies=read)  # fmt: skip
    async def list_cases(
        request: Request,
        reviewed: Annotated[bool | None, Query(description="true: reviewed only; false: not yet reviewed")] = None,
        since: Annotated[datetime | None, Query(description="Stored at or after (ISO 8601)")] = None,
        until: Annotated[datetime | None, Query(description="Stored before (ISO 8601)")] = None,
        model: Annotated[str | None, Query(description="A model tag the case was scored with, name@version")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Any:
        def query(store):
            return store.list_cases(
                reviewed=reviewed, since=since, until=until, model=model, limit=limit, offset=offset
            )

        page = await run(query)
        items = [dataclasses.asdict(item) for item in page.items]
        return {"cases": items, "total": page.total, "limit": limit, "offset": offset,
                "request_id": request_id_of(request)}  # fmt: skip

    @app.get("/v1/cases/{case_id}", summary="A stored case with its review", response_model=CaseAnswer,
             responses=responses(), dependencies=read)  # fmt: skip
    async def get_case(request: Request, case_id: str) -> Any:
        return case_json(await run(lambda store: store.get(case_id)), request_id_of(request))

    @app.get(
        "/v1/cases/{case_id}/overlay.png",
        summary="The picture of a stored case (reviewed scores drawn where they differ)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, **responses()},
        dependencies=read,
    )
    async def case_overlay(case_id: str) -> Response:
        def draw(store) -> bytes:
            from deepxray.cases.overlay import image_for_overlay, overlay_png

            image = store.image(case_id)
            if image is None:
                raise NoImageError("This case was stored without a picture of the film (store_images: none).")
            case = store.get(case_id)
            view, scale = image_for_overlay(image, desk.settings.preview_max_side)
            return overlay_png(view, scale, case.answer, reviewed_scores(case))

        return Response(await run(draw), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.put("/v1/cases/{case_id}/review", summary="Accept or correct the scores of a case", response_model=CaseAnswer,
             responses=responses(422), dependencies=review)  # fmt: skip
    async def review_case(request: Request, case_id: str, body: ReviewRequest) -> Any:
        # The store checks each joint against the case (and fills in the model's score for an acceptance).
        joints = [JointReview(j.hand, j.joint, j.decision, j.score, j.comment) for j in body.joints]
        return case_json(await run(lambda store: store.review(case_id, request.state.subject, joints)),
                         request_id_of(request))  # fmt: skip

    @app.get("/v1/cases/{case_id}/similar", summary="The stored joints most like one joint of this case",
             response_model=SimilarAnswer, responses=responses(422), dependencies=read)  # fmt: skip
    async def similar_joints(
        request: Request,
        case_id: str,
        joint: JointName,
        hand: Annotated[int, Query(ge=0, description="Index of the hand in the answer's `hands`")] = 0,
        k: Annotated[int, Query(ge=1, le=100)] = 8,
    ) -> Any:
        def search(store):
            found = store.similar(case_id, hand, joint, k)  # refuses a joint the case does not have
            query = next(j for j in store.get(case_id).joints if j.hand == hand and j.joint == joint)
            return query.score, found, store.similarity_method

        score, found, method = await run(search)
        return {
            "query": {"case_id": case_id, "hand": hand, "joint": joint, "score": score},
            "similar": [_similar_json(item) for item in found],
            "method": method,
            "request_id": request_id_of(request),
        }

    @app.delete("/v1/cases/{case_id}", summary="Delete a case (its answer, picture, joints and reviews)",
                response_model=DeletedAnswer, responses=responses(), dependencies=review)  # fmt: skip
    async def delete_case(request: Request, case_id: str) -> Any:
        await run(lambda store: store.delete(case_id))
        return {"deleted": case_id, "request_id": request_id_of(request)}
