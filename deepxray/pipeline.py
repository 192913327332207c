"""The scoring pipeline, written once: decode → find hands → per hand: body part (turned four ways) → (mirror) →
detect → crop → score → answer.

The three models come in as async callables, so the same steps run behind the Ray Serve ingress (deployment
handles), in the evaluation and in the monolith baseline (in-process models), and in unit tests (fakes). The
served answer and the evaluated answer cannot differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from deepxray.api.errors import ApiError
from deepxray.api.schemas import ScoreAnswer
from deepxray.evidence import header_warnings, refused_modality
from deepxray.hand_finder import Region, find_hands
from deepxray.hand_layout import MAX_FINGER_TILT_DEG, finger_tilt_deg, layout_problems
from deepxray.imaging import decode_image
from deepxray.imaging.decoded import DicomFacts
from deepxray.imaging.model_inputs import (
    NormalisedImage,
    body_part_view,
    crop_boxes,
    detector_view,
    joint_crops,
    turn_view,
)
from deepxray.labels import BODY_PARTS, BOTH_HANDS, HAND_PARTS, JOINT_NAMES, RESEARCH_NOTICE
from deepxray.settings import Settings

# Turns of the film on which the detector is tried, the two most hand-like to the body-part model: the right turn
# was the most hand-like for 120 of 120 phantom films stored at 0, 90, 180 and 270 degrees; where both show an
# upright hand (a film placed askew), the fingers decide.
MAX_ORIENTATIONS_TRIED = 2
# How much straighter (degrees) the fingers must stand under a turn than as stored for the turn to be believed.
TURN_BIAS_DEG = 15.0
# Degrees of tilt that a doubt of 1.0 in the least sure joint weighs: an upside-down right hand seen as stored
# was taken for a left hand (0.96) whose joints formed a hand's layout, but found with least confidence 0.29
# against 0.91 under the right turn.
DOUBT_WEIGHT_DEG = 30.0


class ScoringError(ApiError, status=422, code="unscorable"):
    """An input the pipeline cannot score, with a sentence a user understands."""


class NotAHandError(ScoringError, code="not_a_hand"):
    """The body-part model did not see a hand, or is not confident it did."""


class JointsNotFoundError(ScoringError, code="joints_not_found"):
    """The joint detector is not confident of every joint."""


class ImplausibleHandError(ScoringError, code="implausible_joints"):
    """The ten joints found do not form a hand (`deepxray.hand_layout`)."""


class OrientationUnclearError(ScoringError, code="orientation_unclear"):
    """No way of turning the film shows an upright hand."""


class NotARadiographError(ScoringError, code="not_radiograph_modality"):
    """The DICOM header's Modality is no projection radiograph."""


@dataclass(frozen=True)
class BodyPartResult:
    label: str
    probability: float
    probabilities: list[float]


# What the scorer gives for one crop: its 6 grade probabilities, or (probabilities, embedding) where the model
# also gives the crop's embedding (its penultimate features, kept by the case store for similar-case search).
ScorerOutput = np.ndarray | tuple[np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class Models:
    """The three models as async callables, and their `name@version` tags.

    The body-part model and the scorer take a stack of inputs per call (the four turns of a view in one call;
    `Settings.crops_per_call` crops per call), so a film costs few calls however the models are reached.
    `versions` is read when the answer is assembled, after every call returned: the ingress fills it from the
    tags that came back with the outputs (`deepxray.api.service`), so it names the models that did the work.
    """

    classify: Callable[[np.ndarray], Awaitable[np.ndarray]]  # (n, view) -> (n, len(BODY_PARTS)) probabilities
    detect: Callable[[np.ndarray], Awaitable[np.ndarray]]  # view -> (10, 3) x, y (view px), confidence
    score: Callable[[np.ndarray], Awaitable[Sequence[ScorerOutput]]]  # (n, crop) -> each crop's output
    versions: dict[str, str]


def split_scorer_output(output: ScorerOutput) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, embedding or None) of one crop's `ScorerOutput`."""
    if isinstance(output, tuple):
        return output
    return output, None


@dataclass
class FilmCapture:
    """What scoring a film leaves besides its answer, for the ingress to keep or draw: never part of the answer.

    Attributes:
        pixels: The decoded film (as stored in the file), so a picture needs no second decode.
        embeddings: Per hand of the answer (its order), each joint's embedding (None: the scorer gave none).
    """

    pixels: np.ndarray | None = None
    embeddings: list[dict[str, np.ndarray | None]] = field(default_factory=list)


@dataclass
class Timings:
    """Seconds spent in each step of one request (for logs and the benchmark)."""

    decode: float = 0.0  # decoding and finding the hands
    body_part: float = 0.0
    detect: float = 0.0
    crop: float = 0.0
    score: float = 0.0

    @property
    def total(self) -> float:
        return self.decode + self.body_part + self.detect + self.crop + self.score


def _prepare(data: bytes, settings: Settings) -> tuple[np.ndarray, DicomFacts | None]:
    """The decoded film's pixels and its DICOM facts; refuses a non-radiograph modality before any model runs."""
    decoded = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    modality = refused_modality(decoded.dicom)
    if modality is not None:  # before any model runs, and before the pixels are normalised
        raise NotARadiographError(
            f"The DICOM header gives the modality {modality}, not a projection radiograph; only hand radiographs "
            "are scored.",
            modality=modality,
        )
    return decoded.pixels, decoded.dicom


def _normalised(pixels: np.ndarray, region: Region | None) -> tuple[NormalisedImage, np.ndarray]:
    """The film, or one hand's side of it, normalised on its own (each side of a two-hand film may have had
    its own exposure), and its body-part view."""
    image = NormalisedImage.from_pixels(pixels if region is None else pixels[region.slices])
    return image, body_part_view(image)


def interpret_body_part(probabilities: np.ndarray, settings: Settings) -> BodyPartResult:
    """The most probable class; refuses (422) anything but a confident hand."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    best = int(np.argmax(probabilities))
    answer = BodyPartResult(BODY_PARTS[best], float(probabilities[best]), [float(p) for p in probabilities])
    if answer.label not in HAND_PARTS:
        seen = answer.label.replace("_", " ")
        raise NotAHandError(
            f"This image does not look like a hand radiograph: the body-part model saw {seen} "
            f"(probability {answer.probability:.2f}). Only hand radiographs are scored.",
            body_part={"label": answer.label, "probability": round(answer.probability, 4)},
        )
    if answer.probability < settings.accept_probability:
        raise NotAHandError(
            f"The body-part model is not confident this is a hand radiograph (it saw "
            f"{answer.label.replace('_', ' ')} with probability {answer.probability:.2f}, below "
            f"{settings.accept_probability:.2f}), so it is not scored.",
            body_part={"label": answer.label, "probability": round(answer.probability, 4)},
        )
    return answer


def orientation_candidates(seen: list[np.ndarray], settings: Settings) -> list[tuple[int, BodyPartResult]]:
    """The quarter turns to try, most hand-like first: the film as stored when the body-part model sees a
    confident hand in it, and the turns under which it sees a hand with near certainty
    (`turned_accept_probability`). Feet and other images can look like a hand turned, but only as a guess (left + right hand
    probability at most 0.76 for 75 phantom feet, at least 0.999 for 180 hands stored turned). Refuses (422, as
    `interpret_body_part` would for the film as stored) when there is nothing to try."""
    hand = [BODY_PARTS.index(label) for label in sorted(HAND_PARTS)]
    candidates = []
    for turns, probabilities in enumerate(seen):
        hand_probability = float(np.sum(np.asarray(probabilities)[hand]))
        with contextlib.suppress(NotAHandError):
            body = interpret_body_part(probabilities, settings)
            if turns == 0 or hand_probability >= settings.turned_accept_probability:
                candidates.append((-hand_probability, turns, body))
    if not candidates:
        interpret_body_part(seen[0], settings)  # raises: the film as stored is no confident hand either
    return [(turns, body) for _, turns, body in sorted(candidates, key=lambda candidate: candidate[:2])]


async def locate_joints(image: NormalisedImage, body: BodyPartResult, turns: int, models: Models, settings: Settings):
    """The ten joints in the uploaded image's coordinates, and their confidences, with the film turned clockwise
    by `turns` quarter turns; refuses (422) joints not found, joints that do not form a hand, or a hand whose
    fingers do not point up (the film is not upright that way)."""
    mirrored = body.label == "right_hand"
    hand_view = await asyncio.to_thread(detector_view, image, mirrored, turns)
    keypoints = np.asarray(await models.detect(hand_view.pixels), dtype=np.float64)
    confidence = keypoints[:, 2]
    seen = {"body_part": {"label": body.label, "probability": round(body.probability, 4)}}
    if confidence.min() < settings.min_joint_confidence:
        missing = [name for name, c in zip(JOINT_NAMES, confidence, strict=True) if c < settings.min_joint_confidence]
        raise JointsNotFoundError(
            f"The joint detector could not find {', '.join(missing)} with confidence (least "
            f"{confidence.min():.2f}, needed {settings.min_joint_confidence:.2f}); the image may be cropped, "
            "overexposed or show a hand in an unusual position.",
            joints_not_found=missing,
            **seen,
        )
    found = dict(zip(JOINT_NAMES, keypoints[:, :2], strict=True))
    problems = layout_problems(found)
    if problems:
        raise ImplausibleHandError(
            f"The joints found do not form a hand ({'; '.join(problems)}), so the image is not scored.",
            layout_problems=problems,
            **seen,
        )
    tilt = finger_tilt_deg(found)
    if tilt > MAX_FINGER_TILT_DEG:
        raise OrientationUnclearError(
            f"The film's orientation is unclear: turned the way the body-part model found most hand-like, the "
            f"fingers point {tilt:.0f} degrees away from up, so the image is not scored.",
            **seen,
        )
    centers_xy = hand_view.to_image(keypoints[:, :2])
    centers = {name: (float(x), float(y)) for name, (x, y) in zip(JOINT_NAMES, centers_xy, strict=True)}
    return centers, confidence, tilt


@dataclass(frozen=True)
class ScoredHand:
    hand: dict  # the answer's hand, in the film's coordinates
    turns: int  # clockwise quarter turns that showed it upright
    body: BodyPartResult
    embeddings: dict[str, np.ndarray | None]  # each joint's crop embedding


async def score_hand(
    pixels: np.ndarray, region: Region | None, models: Models, settings: Settings, timings: Timings
) -> ScoredHand:
    """Score the one hand of a film, or of its `region` (one side of a two-hand film); raises `ScoringError`.

    A film stored turned is found by showing the body-part model the film turned each way (four small views at
    once) and trying the detector on the most hand-like turn, then the next. Positions are reported in the
    uploaded file's coordinates all the same. Step times are added to `timings`.
    """
    start = time.perf_counter()
    image, view = await asyncio.to_thread(_normalised, pixels, region)
    seen = await models.classify(np.stack([turn_view(view, turns) for turns in range(4)]))
    candidates = orientation_candidates(list(seen), settings)
    timings.body_part += time.perf_counter() - start

    start = time.perf_counter()
    found, refusals = [], []
    for turns, body in candidates[:MAX_ORIENTATIONS_TRIED]:
        try:
            found.append((*await locate_joints(image, body, turns, models, settings), turns, body))
        except ScoringError as refusal:
            refusals.append(refusal)
    if not found:
        raise refusals[0]
    # Where the hand stands upright under two turns (a film placed askew by about 45 degrees), the one with the
    # fingers straighter up and the joints found surer is the film's, and the film as stored unless a turn is
    # clearly better.
    centers, confidence, _, turns, body = min(found, key=_turn_doubt)
    timings.detect += time.perf_counter() - start
    mirrored = body.label == "right_hand"

    start = time.perf_counter()
    crops = await asyncio.to_thread(joint_crops, image, centers, JOINT_NAMES, mirrored)
    timings.crop += time.perf_counter() - start

    start = time.perf_counter()
    # All ten crops go out at once, `crops_per_call` to a call: the scorer batches the calls (and those of other
    # requests) into one pass; one call per joint spreads a film over more scorer replicas (README: "Fan-out").
    per_call = settings.crops_per_call
    calls = [crops[first : first + per_call] for first in range(0, len(crops), per_call)]
    outputs = [output for answer in await asyncio.gather(*map(models.score, calls)) for output in answer]
    timings.score += time.perf_counter() - start
    probabilities, embeddings = zip(*map(split_scorer_output, outputs), strict=True)
    if region is not None:
        centers = {name: (x + region.x0, y + region.y0) for name, (x, y) in centers.items()}
    hand = assemble_hand("R" if mirrored else "L", centers, confidence, probabilities)
    return ScoredHand(hand, turns, body, dict(zip(JOINT_NAMES, embeddings, strict=True)))


def _turn_doubt(hand: tuple) -> float:
    """How doubtful a turn's hand is, in degrees: (centres, confidence, tilt, turns, body) from `locate_joints`."""
    _, confidence, tilt, turns, _ = hand
    return tilt + (TURN_BIAS_DEG if turns else 0.0) + DOUBT_WEIGHT_DEG * (1.0 - float(np.min(confidence)))


async def score_radiograph(
    data: bytes,
    models: Models,
    settings: Settings | None = None,
    request_id: str = "",
    timings: Timings | None = None,
    capture: FilmCapture | None = None,
) -> dict:
    """Score every hand on one uploaded radiograph; returns the `/score` answer (a `ScoreAnswer`, as a dict).

    A film of two hands side by side (`deepxray.hand_finder`) is scored side by side, both hands at once; a
    hand found but not scorable is listed with its reason, and the film is refused only when no hand can be
    scored. Raises `deepxray.imaging.ImagingError` (400/413/415) for files that cannot be read and
    `ScoringError` (422) for images that are not a scorable hand. CPU-heavy steps run in threads, so an event
    loop serving other requests is never blocked. `settings` None: `Settings()`. `timings`: step times, summed
    over the hands of a film. `capture`: filled with the decoded film and the joints' embeddings.
    """
    settings = settings if settings is not None else Settings()
    timings = timings if timings is not None else Timings()
    capture = capture if capture is not None else FilmCapture()
    start = time.perf_counter()
    pixels, header = await asyncio.to_thread(_prepare, data, settings)
    capture.pixels = pixels
    regions = await asyncio.to_thread(find_hands, pixels)
    timings.decode = time.perf_counter() - start

    sides: list = []
    if regions:
        sides = await asyncio.gather(
            *(score_hand(pixels, region, models, settings, timings) for region in regions), return_exceptions=True
        )
        for side in sides:
            if isinstance(side, BaseException) and not isinstance(side, ScoringError):
                raise side  # a model that failed or timed out fails the film, as for a single hand
    both_hands = bool(sides) and all(_found_hand(side) for side in sides)
    any_scored = any(isinstance(side, ScoredHand) for side in sides)
    if both_hands and any_scored:
        return _answer_for_sides(regions, sides, header, models, request_id, capture)
    # Otherwise the film is looked at whole (a single hand, one that the finder split, a film with one hand cut
    # off, or no hand at all); where that finds nothing to score, the sides' answer stands.
    try:
        scored = await score_hand(pixels, None, models, settings, timings)
    except ScoringError:
        if any_scored or both_hands:  # the scored side, or why each hand found was refused
            return _answer_for_sides(regions, sides, header, models, request_id, capture)
        raise
    warnings = header_warnings(header, [scored.hand["laterality"]])
    capture.embeddings = [scored.embeddings]
    return assemble_answer(scored.body, [scored.hand], 90 * scored.turns, warnings, models.versions, request_id)


async def answer_or_refusal(data: bytes, models: Models, settings: Settings | None = None) -> tuple[int, dict]:
    """The `/score` contract without HTTP: (200, the answer), or the status and error body of a file refused
    (unreadable, too large, not a hand, ...). Failures of the models themselves still raise."""
    try:
        return 200, await score_radiograph(data, models, settings)
    except ApiError as error:
        if error.status >= 500:
            raise
        return error.status, error.to_json()


def _found_hand(side: ScoredHand | ScoringError) -> bool:
    """A side of the film that shows a hand: scored, or accepted as a hand by the body-part model and refused
    by a later step (some joints not found, not a hand's layout, orientation unclear: a hand cut off, say). A
    side where the detector found none of the joints shows no hand (a forearm, say)."""
    if isinstance(side, ScoredHand):
        return True
    if len(side.extra.get("joints_not_found", ())) == len(JOINT_NAMES):
        return False
    return not isinstance(side, NotAHandError) and side.extra.get("body_part", {}).get("label") in HAND_PARTS


def _answer_for_sides(
    regions: list[Region], sides: list, header, models: Models, request_id: str, capture: FilmCapture
):
    """The answer for a film the hand finder split: every scored hand, every other hand found with the reason
    it was not scored, and a warning for a side that showed no hand. 422 when no hand could be scored."""
    names = _side_names(regions)
    scored = [side for side in sides if isinstance(side, ScoredHand)]
    refused = [(name, region, side) for name, region, side in zip(names, regions, sides, strict=True)
               if isinstance(side, ScoringError)]  # fmt: skip
    hands_refused = [(name, region, side) for name, region, side in refused if _found_hand(side)]
    if not scored:
        reasons = "; ".join(f"{name}: {side.detail}" for name, _, side in refused)
        first = hands_refused[0][2]
        raise type(first)(f"No hand on this film could be scored ({reasons}).", **first.extra)
    found = [side.body for side in scored] + [
        BodyPartResult(side.extra["body_part"]["label"], side.extra["body_part"]["probability"], [])
        for _, _, side in hands_refused
    ]
    body = BodyPartResult(BOTH_HANDS, min(seen.probability for seen in found), []) if len(found) > 1 else found[0]
    ordered = sorted(scored, key=lambda side: side.hand["laterality"] != "L")
    warnings = header_warnings(header, [side.hand["laterality"] for side in ordered])
    warnings += [f"The {name} of the film was not scored: {side.detail}" for name, _, side in refused
                 if not _found_hand(side)]  # fmt: skip
    if len({side.turns for side in ordered}) > 1:  # one film is stored one way: one of the two is wrong
        turns = " and ".join(f"a {side.hand['laterality']} hand turned by {90 * side.turns}" for side in ordered)
        raise OrientationUnclearError(
            f"The film's orientation is unclear: its two hands were found turned differently ({turns} degrees), "
            "so it is not scored.",
            body_part={"label": BOTH_HANDS, "probability": round(min(side.body.probability for side in ordered), 4)},
        )
    not_scored = [{"box": region.box, "error": side.code, "detail": side.detail} for _, region, side in hands_refused]
    rotated_deg = 90 * ordered[0].turns
    capture.embeddings = [side.embeddings for side in ordered]  # the answer's order: `ordered` is sorted alike
    return assemble_answer(
        body, [side.hand for side in ordered], rotated_deg, warnings, models.versions, request_id, not_scored
    )


def _side_names(regions: list[Region]) -> list[str]:
    side_by_side = regions[0].y1 == regions[1].y1
    return ["left side", "right side"] if side_by_side else ["upper side", "lower side"]


def assemble_hand(laterality: str, centers, confidence, probabilities) -> dict:
    """One hand of the answer: its scores, joints, where it is on the film and how sure the detector was."""
    boxes = crop_boxes(centers)
    joints, scores = {}, {}
    for i, name in enumerate(JOINT_NAMES):
        p = np.asarray(probabilities[i], dtype=np.float64)
        scores[name] = int(np.argmax(p))
        joints[name] = {
            "score": scores[name],
            "probabilities": [round(float(v), 4) for v in p],
            "center": [round(c, 1) for c in centers[name]],
            "box": [round(c, 1) for c in boxes[name]],
            "confidence": round(float(confidence[i]), 4),
        }
    corners = np.array(list(boxes.values()))
    return {
        "laterality": laterality,
        "scores": scores,
        "total": sum(scores.values()),
        "joints": joints,
        "box": [round(float(v), 1) for v in (*corners[:, :2].min(0), *corners[:, 2:].max(0))],
        "confidence": round(float(np.min(confidence)), 4),
    }


def assemble_answer(
    body, hands: list[dict], rotated_deg: int, warnings: list[str], versions, request_id, not_scored=()
) -> dict:
    """The `/score` answer, built as `ScoreAnswer` (so it is what the OpenAPI schema says), as a dict. The
    top-level scores are the left hand's when the film shows one, else the only hand's; `not_scored`: hands
    found but refused, with their reasons."""
    hands = sorted(hands, key=lambda hand: hand["laterality"] != "L")
    first = hands[0]
    answer = ScoreAnswer(
        scores=first["scores"],
        total=first["total"],
        body_part={"label": body.label, "probability": round(body.probability, 4)},
        laterality=first["laterality"],
        joints=first["joints"],
        hands=hands,
        hands_not_scored=list(not_scored),
        orientation={"rotated_deg": rotated_deg},
        warnings=warnings,
        models=dict(versions),
        request_id=request_id,
        notice=RESEARCH_NOTICE,
    )
    return answer.model_dump(exclude={"case_id", "overlay"})  # the ingress adds them where they apply
