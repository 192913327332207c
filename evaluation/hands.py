"""Which answered hand is which labelled hand of a film: paired by position, never by laterality.

A film may show two hands. The labels give each hand's joint centres in the film's pixels; the `/score` answer
gives each scored hand's joints and box in the same pixels (`hands`), and the box and reason of each hand it
found but refused (`hands_not_scored`). A labelled hand is paired with the answered hand whose MCP3 centre lies
nearest its own, nearest pairs first, each hand at most once. Where not every hand of the film is labelled (one
hand of a film of both hands), an answered hand pairs only with a labelled hand its box holds, so the other,
unlabelled hand never stands in for a labelled one that was refused. Laterality is one of the things measured,
so it never decides a pair, except where the labels hold no centres at all (a CSV without coordinates): then
the one labelled hand of a film is the answer's first hand (its top-level scores), and each hand of a two-hand
film the answered hand of its laterality.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Point = tuple[float, float]
Box = Sequence[float]  # x0, y0, x1, y1 in the film's pixels

ANCHOR_JOINT = "mcp3"
# Why a labelled hand got no scores when the answer does not say: the film was answered, but neither its hands
# nor its refused hands lie where this hand is (the hand finder did not see it, or a side was not a hand).
NOT_FOUND = "not_found"


def anchor(centers: Mapping[str, Point] | None) -> Point | None:
    """Where a hand is: its MCP3 centre, else the mean of the centres it has; `None` without centres."""
    if not centers:
        return None
    if ANCHOR_JOINT in centers:
        x, y = centers[ANCHOR_JOINT]
        return float(x), float(y)
    xs, ys = zip(*centers.values(), strict=True)
    return sum(xs) / len(xs), sum(ys) / len(ys)


def _holds(box: Box | None, point: Point) -> bool:
    return box is None or (box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3])


def pair_by_position(
    labelled: Sequence[Point | None], found: Sequence[Point], boxes: Sequence[Box | None] | None = None
) -> list[int | None]:
    """For each labelled point, the index of the found point paired with it (or `None`).

    Pairs are taken nearest first, each point at most once; a found point pairs only with labelled points its
    box holds (`boxes` `None`: no such condition). Labelled points that are `None` stay unpaired.
    """
    boxes = boxes if boxes is not None else [None] * len(found)
    candidates = sorted(
        (math.dist(point, spot), i, k)
        for i, point in enumerate(labelled)
        if point is not None
        for k, spot in enumerate(found)
        if _holds(boxes[k], point)
    )
    paired: list[int | None] = [None] * len(labelled)
    taken = set()
    for _, i, k in candidates:
        if paired[i] is None and k not in taken:
            paired[i] = k
            taken.add(k)
    return paired


def _box_centre(box: Box) -> Point:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def pair_hands(
    labelled: Sequence[tuple[str | None, Mapping[str, Point] | None]],
    answer: Mapping | None,
    film_error: str | None,
    every_hand_labelled: bool = True,
) -> list[tuple[dict | None, str | None]]:
    """Per labelled hand (laterality, centres): the answered hand paired with it, or `None` and why not.

    Args:
        labelled: Each labelled hand of the film as (laterality "L"/"R" or `None`, joint -> (x, y) or `None`).
        answer: The `/score` answer (200), or `None` when the film was refused.
        film_error: The error code of a refused film (e.g. `not_a_hand`), else `None`.
        every_hand_labelled: False where the film shows a hand that is not labelled: an answered hand then
            pairs only with a labelled hand its box holds.

    Returns:
        One (hand of `answer["hands"]`, `None`) for a hand that was scored, or (`None`, reason) for one that was
        not: `film_error` for a refused film, the code of the `hands_not_scored` entry whose box holds the hand,
        else `NOT_FOUND`.
    """
    if answer is None:
        return [(None, film_error) for _ in labelled]
    answered = list(answer.get("hands") or [answer])  # an answer of a service from before `hands` is one hand
    points = [anchor(centers) for _, centers in labelled]
    if all(point is None for point in points):
        if len(labelled) == 1 and every_hand_labelled:
            return [(answered[0], None)]
        by_side = {hand["laterality"]: hand for hand in answered}
        return [(by_side.get(laterality), None if laterality in by_side else NOT_FOUND) for laterality, _ in labelled]
    found = [tuple(hand["joints"][ANCHOR_JOINT]["center"]) for hand in answered]
    paired = pair_by_position(points, found, None if every_hand_labelled else [hand.get("box") for hand in answered])
    refused = answer.get("hands_not_scored") or []
    boxes = [entry["box"] for entry in refused]
    unscored = [point if k is None else None for point, k in zip(points, paired, strict=True)]
    reasons = pair_by_position(unscored, [_box_centre(box) for box in boxes], boxes)
    return [
        (answered[k], None) if k is not None else (None, NOT_FOUND if r is None else refused[r]["error"])
        for k, r in zip(paired, reasons, strict=True)
    ]
