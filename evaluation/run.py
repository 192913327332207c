"""Running a model set over labelled images: in this process, or against a running service over HTTP.

Both paths produce the same `ImageResult`s from the same pipeline, so the numbers agree (the service runs
`deepxray.pipeline.score_radiograph` too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from deepxray.labels import BOTH_HANDS
from evaluation.data import LabelledImage
from evaluation.hands import pair_hands
from evaluation.results import HandResult, ImageResult

Outcome = tuple[int, dict]  # HTTP-like status, JSON body


def _predicted(hand: dict | None) -> dict:
    """An answered hand (or the answer's top level) as `ImageResult`/`HandResult` prediction fields."""
    joints = (hand or {}).get("joints") or {}
    return {
        "pred_scores": hand.get("scores") if hand else None,
        "pred_probabilities": {k: j["probabilities"] for k, j in joints.items()} if hand else None,
        "pred_centers": {k: tuple(j["center"]) for k, j in joints.items()} if hand else None,
    }


def result_from_answer(image_id: str, image: LabelledImage, status: int, body: dict, seconds: float) -> ImageResult:
    """One evaluated image from a `/score` answer (200) or its error (422 names the body part it saw).

    Each labelled hand is paired with the nearest answered hand (`evaluation.hands.pair_hands`); the
    image's own prediction fields are its one labelled hand's (an image that is no hand: the answer's top level;
    a film of several labelled hands: empty, see `hands`).
    """
    accepted = status == 200
    body_part = body.get("body_part") or {}
    labelled = [(hand.laterality, hand.centers) for hand in image.hands]
    every_hand_labelled = image.body_part != BOTH_HANDS or len(image.hands) > 1
    paired = pair_hands(labelled, body if accepted else None, body.get("error"), every_hand_labelled)
    hands = [
        HandResult(hand.laterality, hand.scores, hand.centers, (answered or {}).get("laterality"),
                   **_predicted(answered), not_scored=reason)
        for hand, (answered, reason) in zip(image.hands, paired, strict=True)
    ]  # fmt: skip
    own = paired[0][0] if len(hands) == 1 else body if accepted and not hands else None
    return ImageResult(
        image_id=image_id,
        true_body_part=image.body_part,
        pred_body_part=body_part.get("label"),
        body_part_probability=body_part.get("probability"),
        accepted=accepted,
        true_scores=image.scores,
        true_centers=image.centers,
        seconds=seconds,
        hands=hands,
        **_predicted(own),
    )


def in_process_scorer(models_dir: Path) -> Callable[[bytes], Outcome]:
    """Score with the models of `models_dir` loaded in this process."""
    from deepxray.models.runtime import local_models
    from deepxray.pipeline import answer_or_refusal

    models = local_models(models_dir)
    loop = asyncio.new_event_loop()

    def score(data: bytes) -> Outcome:
        return loop.run_until_complete(answer_or_refusal(data, models))

    return score


def http_scorer(url: str, timeout_s: float = 60.0, token: str | None = None) -> Callable[[bytes], Outcome]:
    """Score by posting to a running service's `/score` (`url` is its base, e.g. http://127.0.0.1:8000), with
    `Authorization: Bearer <token>` when a token (or API key) is given. A 401 or 403 raises `AccessRefusedError`
    at once: it is about the credential, not about the image."""
    import httpx

    from deepxray.batch.remote import access_refused

    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx.Client(base_url=base, timeout=timeout_s, headers=headers)

    def score(data: bytes) -> Outcome:
        response = client.post("/score", files={"xray": ("image", data, "application/octet-stream")})
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if response.status_code in (401, 403):
            raise access_refused(base, response.status_code, body, token, refused="the evaluation", then="")
        return response.status_code, body

    return score


def evaluate(
    images: list[LabelledImage], score: Callable[[bytes], Outcome], progress: bool = True, name: str = "evaluating"
) -> list[ImageResult]:
    """Score every image (with a progress bar) and pair each answer with its labels."""
    from tqdm import tqdm

    results = []
    for index, image in enumerate(tqdm(images, desc=name, unit="img", disable=not progress)):
        data = Path(image.path).read_bytes()
        start = time.perf_counter()
        status, body = score(data)
        seconds = time.perf_counter() - start
        if status not in (200, 422):
            raise RuntimeError(f"{image.path}: the scorer answered {status}: {body.get('detail', body)}")
        results.append(result_from_answer(f"{index}:{Path(image.path).name}", image, status, body, seconds))
    return results


def configured_models_dir() -> Path:
    """The model folder when none is given: `DEEPXRAY_MODELS_DIR` if set, else the shipped models."""
    from deepxray.settings import Settings

    return Settings().models_folder()


def describe(models: Path | None, url: str | None) -> str:
    return f"service at {url}" if url else f"models in {models}"


def run_evaluation(
    data: Path,
    out_dir: Path,
    models: Path | None = None,
    url: str | None = None,
    compare: Path | None = None,
    resamples: int = 1000,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
    token: str | None = None,
) -> dict[str, Path]:
    """`deepxray evaluate`: evaluate (and optionally compare) and write the report; returns the written files.

    The labels and every model folder (`models`, `compare`) are checked before any image is scored: a missing
    folder, artifact or card is a ValueError of one sentence. Without `models` or `url`, the models are those of
    `DEEPXRAY_MODELS_DIR` (`deepxray.settings.Settings.models_dir`) or else the shipped ones. `token` (a bearer
    token or API key, for `url` only) is sent with every request; a service that refuses it stops the evaluation
    with `deepxray.batch.remote.AccessRefusedError` (a ValueError).
    """
    from deepxray.models.registry import check_model_set
    from evaluation.data import load_labels
    from evaluation.report import write_report
    from evaluation.results import compare_results, summarise

    images = load_labels(data)[:limit]
    if url is None:
        role = "--models folder" if models else "model folder"
        models = check_model_set(models or configured_models_dir(), role=role)
    if compare is not None:
        compare = check_model_set(compare, role="--compare folder")
    scorer = http_scorer(url, token=token) if url else in_process_scorer(models)
    results = evaluate(images, scorer, progress, name="model set A")
    summary = summarise(results, n_resamples=resamples, seed=seed)
    title = f"DeepXRay evaluation: {describe(models, url)} on {data} ({len(images)} images)"
    comparison = None
    if compare is not None:
        other = evaluate(images, in_process_scorer(compare), progress, name="model set B")
        comparison = compare_results(results, other, n_resamples=resamples, seed=seed)
        title += f", compared with models in {compare}"
    return write_report(
        summary, out_dir, title, compare=comparison, compare_name=str(compare), name=describe(models, url)
    )
