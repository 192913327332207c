"""One labelled phantom of any class, reproducible from (seed, index)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deepxray.labels import BODY_PARTS, BOTH_HANDS
from deepxray.phantoms import others
from deepxray.phantoms.both_hands import FilmHand, render_both_hands
from deepxray.phantoms.hand import HandPhantom, render_hand
from deepxray.phantoms.scores import draw_scores

DEFAULT_SHAPE = (2560, 2048)  # rows, columns: about 25 x 31 cm at 0.12 mm
# Detector pixel pitch for each kind of film (mm); the pose's scale varies the size on top of it.
PIXEL_SPACING_MM = {"hand": (0.11, 0.14), "foot": (0.13, 0.16), "chest": (0.16, 0.2), "knee": (0.13, 0.16),
                    "skull": (0.14, 0.17)}  # fmt: skip


@dataclass
class Phantom:
    """An image and its labels, as written to the manifest."""

    image: np.ndarray  # uint16 12-bit radiograph (bone bright), or uint8 picture (grey or RGB)
    body_part: str
    kind: str
    laterality: str | None
    pixel_spacing_mm: float | None
    scores: dict[str, int] | None = None
    centers: dict[str, tuple[float, float]] | None = None
    extra: dict = field(default_factory=dict)
    hands: list[FilmHand] | None = None  # every hand on the film (a single-hand film: the one), left hand first

    @property
    def is_radiograph(self) -> bool:
        return self.body_part != "not_radiograph"


def streams(seed: int, index: int, body_part: str = "left_hand") -> dict[str, np.random.Generator]:
    """Independent random streams for one image, so one aspect (the scores) can change without the rest.

    The body part is part of the key: a right hand is its own draw, not the mirror image of the left hand with
    the same index.
    """
    names = ("kind", "geometry", "texture", "erosion", "scores")
    key = (index, (*BODY_PARTS, BOTH_HANDS).index(body_part))
    children = np.random.SeedSequence(seed, spawn_key=key).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children, strict=True)}


def render_phantom(
    seed: int,
    index: int,
    body_part: str,
    distribution: str = "clinical",
    shape: tuple[int, int] = DEFAULT_SHAPE,
    scores: dict[str, int] | None = None,
) -> Phantom:
    """Render image `index` of the set `seed`. `scores` overrides the drawn scores of a hand. `both_hands`: a
    film of both hands, wider than `shape` (`deepxray.phantoms.both_hands.WIDTH_FACTOR`), labelled in `hands`."""
    if body_part not in (*BODY_PARTS, BOTH_HANDS):
        raise ValueError(f"unknown body part {body_part!r}; choose from {', '.join(BODY_PARTS)} or {BOTH_HANDS}")
    rng = streams(seed, index, body_part)
    if body_part == BOTH_HANDS:
        spacing = float(rng["kind"].uniform(*PIXEL_SPACING_MM["hand"]))
        image, hands = render_both_hands(rng, distribution, spacing, shape)
        return Phantom(image, BOTH_HANDS, "hand", None, spacing, hands=hands)
    if body_part in ("left_hand", "right_hand"):
        drawn = draw_scores(rng["scores"], distribution)
        spacing = float(rng["kind"].uniform(*PIXEL_SPACING_MM["hand"]))
        hand: HandPhantom = render_hand(
            rng["geometry"],
            rng["texture"],
            rng["erosion"],
            scores if scores is not None else drawn,
            laterality="L" if body_part == "left_hand" else "R",
            shape=shape,
            mm_per_px=spacing,
        )
        return Phantom(
            image=hand.image,
            body_part=body_part,
            kind="hand",
            laterality=hand.laterality,
            pixel_spacing_mm=spacing,
            scores=hand.scores,
            centers=hand.centers,
            extra={"ring": hand.ring, "marker": hand.marker, "destroyed_share": hand.destroyed_share},
            hands=[FilmHand(hand.laterality, hand.scores, hand.centers, (0, 0, shape[1], shape[0]))],
        )
    if body_part == "not_radiograph":
        kind = str(rng["kind"].choice(others.NOT_RADIOGRAPHS))
        return Phantom(others.render_picture(kind, rng["geometry"]), body_part, kind, None, None)
    kind = {"chest": "chest", "foot": "foot"}.get(body_part) or str(rng["kind"].choice(others.OTHER_RADIOGRAPHS))
    spacing = float(rng["kind"].uniform(*PIXEL_SPACING_MM[kind]))
    renderer = {"chest": others.render_chest, "foot": others.render_foot, "knee": others.render_knee,
                "skull": others.render_skull}[kind]  # fmt: skip
    image, laterality = renderer(rng["geometry"], rng["texture"], shape, spacing)
    return Phantom(image, body_part, kind, laterality, spacing)
