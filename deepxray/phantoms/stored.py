"""Films as archives sometimes store them: turned by quarter turns, or mirrored left to right, labels moved along.

A film stored turned by 90 degrees was turned counter-clockwise from upright; the pipeline turns it back
clockwise and answers `orientation.rotated_deg == 90`. A mirrored film shows each hand's mirror image, so its
anatomy, and with it the laterality the models must answer, is the other side's.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from deepxray.phantoms.both_hands import FilmHand
from deepxray.phantoms.phantom import Phantom

# How a film can be stored, and the (counter-clockwise quarter turns, mirrored) of each; `deepxray phantoms
# generate --stored any` draws one per image.
STORED = {"upright": (0, False), "turned90": (1, False), "turned180": (2, False), "turned270": (3, False),
          "mirrored": (0, True)}  # fmt: skip
OTHER_SIDE = {"L": "R", "R": "L"}


def store(phantom: Phantom, how: str) -> Phantom:
    """`phantom` as a film stored `how` (a key of `STORED`): image, joint centres, hands and laterality."""
    quarter_turns, mirrored = STORED[how]
    height, width = phantom.image.shape[:2]

    def move(centers: dict | None) -> dict | None:
        if centers is None:
            return None
        xy = np.array(list(centers.values()), dtype=np.float64).reshape(-1, 2)
        if mirrored:
            xy[:, 0] = width - 1 - xy[:, 0]
        w = width
        for _ in range(quarter_turns):  # one counter-clockwise quarter turn: (x, y) -> (y, w - 1 - x)
            xy = np.stack([xy[:, 1], w - 1 - xy[:, 0]], axis=1)
            w = height if w == width else width
        return {name: (float(x), float(y)) for name, (x, y) in zip(centers, xy, strict=True)}

    def side(laterality: str | None) -> str | None:
        return OTHER_SIDE.get(laterality, laterality) if mirrored else laterality

    image = phantom.image[:, ::-1] if mirrored else phantom.image
    image = np.ascontiguousarray(np.rot90(image, quarter_turns))
    hands = [
        FilmHand(side(hand.laterality), hand.scores, move(hand.centers), _box(move(_corners(hand.box))))
        for hand in phantom.hands or []
    ]
    hands.sort(key=lambda hand: hand.laterality != "L")
    mirror_part = {"left_hand": "right_hand", "right_hand": "left_hand"}
    return dataclasses.replace(
        phantom,
        image=image,
        body_part=mirror_part.get(phantom.body_part, phantom.body_part) if mirrored else phantom.body_part,
        laterality=side(phantom.laterality) if phantom.scores is not None else phantom.laterality,
        centers=move(phantom.centers),
        hands=hands or None,
        extra={**phantom.extra, "stored": how},
    )


def _corners(box: tuple[int, int, int, int]) -> dict:
    """A box's first and last pixels, as points (x1 and y1 are excluded from the box)."""
    x0, y0, x1, y1 = box
    return {"first": (x0, y0), "last": (x1 - 1, y1 - 1)}


def _box(corners: dict) -> tuple[int, int, int, int]:
    (ax, ay), (bx, by) = corners["first"], corners["last"]
    return round(min(ax, bx)), round(min(ay, by)), round(max(ax, bx)) + 1, round(max(ay, by)) + 1
