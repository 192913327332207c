"""Films of both hands side by side, the usual rheumatology hand film, made of two hand phantoms.

Each hand is rendered into its own half of the film with its own pose and exposure (as two exposures on one
cassette look), at the same detector pitch. Usually the right hand lies on the film's left side (a PA film seen
as the radiographer hangs it); sometimes the other way round. One arm may be cut off higher by the film's lower
edge, so the hands stand at different heights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepxray.phantoms.hand import render_hand
from deepxray.phantoms.scores import draw_scores

# A both-hands film is this much wider than a single-hand film of the same height (2560 x 3584 pixels for the
# default film: 28 x 39 cm at 0.11 mm, 36 x 50 cm at 0.14 mm); each hand's half is 7/8 of a single-hand film.
WIDTH_FACTOR = 1.75
# Share of films with the right hand on the film's left side (the hanging convention of a PA film).
CONVENTIONAL_SIDES = 0.8
# Share of hands whose forearm is cut off higher, and by how much (rows rendered below the film, of its height).
ARM_CROPPED = 0.4
ARM_CROPPED_SHARE = (0.08, 0.3)
# The joints of a hand whose arm is cut stay this far (share of the height) above the film's lower edge.
JOINT_MARGIN = 0.06


@dataclass
class FilmHand:
    """One hand of a film: its labels, in the film's pixel coordinates."""

    laterality: str
    scores: dict[str, int]
    centers: dict[str, tuple[float, float]]
    box: tuple[int, int, int, int]  # the part of the film it was rendered in: x0, y0, x1, y1 (x1, y1 excluded)


def render_both_hands(
    rngs: dict[str, np.random.Generator],
    distribution: str,
    mm_per_px: float,
    single_shape: tuple[int, int],
) -> tuple[np.ndarray, list[FilmHand]]:
    """The film (uint16, 12-bit, bone bright; `WIDTH_FACTOR` times as wide as `single_shape`) and its two hands,
    left hand first. `rngs` are the phantom's streams (`deepxray.phantoms.phantom.streams`); each hand draws its
    own child streams from them."""
    height, width = single_shape[0], round(single_shape[1] * WIDTH_FACTOR)
    shape = (height, width)
    half = width // 2
    right_first = rngs["kind"].random() < CONVENTIONAL_SIDES
    sides = ("R", "L") if right_first else ("L", "R")
    film = np.empty(shape, dtype=np.uint16)
    hands = []
    for column, laterality in enumerate(sides):
        geometry, texture, erosion = (rngs[name].spawn(1)[0] for name in ("geometry", "texture", "erosion"))
        scores = draw_scores(rngs["scores"], distribution)
        extra = int(rngs["kind"].uniform(*ARM_CROPPED_SHARE) * height) if rngs["kind"].random() < ARM_CROPPED else 0
        hand = render_hand(geometry, texture, erosion, scores, laterality, (height + extra, half), mm_per_px)
        lowest = max(y for _, y in hand.centers.values())
        if lowest > height * (1.0 - JOINT_MARGIN):  # the cut would take joints off the film: keep the whole arm
            hand = render_hand(geometry.spawn(1)[0], texture, erosion, scores, laterality, (height, half), mm_per_px)
        x0 = column * half
        film[:, x0 : x0 + half] = hand.image[:height]
        centers = {name: (x + x0, y) for name, (x, y) in hand.centers.items()}
        hands.append(FilmHand(laterality, hand.scores, centers, (x0, 0, x0 + half, height)))
    if width > 2 * half:  # an odd width: the last column repeats its neighbour
        film[:, 2 * half :] = film[:, 2 * half - 1 : 2 * half]
    hands.sort(key=lambda hand: hand.laterality != "L")
    return film, hands
