"""A contact sheet of phantoms: every class, films as registries hold them (both hands, stored turned or mirrored),
and the same joints at every erosion score, side by side."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from deepxray.labels import JOINT_NAMES
from deepxray.phantoms.phantom import render_phantom
from deepxray.phantoms.stored import store
from deepxray.phantoms.writers import to_8bit

TILE = (240, 300)  # width, height of a class tile
CROP = 200  # side of a joint tile


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    tile = tile.copy()
    cv2.rectangle(tile, (0, 0), (tile.shape[1], 22), 0, -1)
    cv2.putText(tile, text, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1, cv2.LINE_AA)
    return tile


def _grey8(image: np.ndarray) -> np.ndarray:
    image = to_8bit(image)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    scale = min(w / image.shape[1], h / image.shape[0])
    small = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    tile = np.zeros((h, w), np.uint8)
    y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    tile[y : y + small.shape[0], x : x + small.shape[1]] = small
    return tile


def _class_row(seed: int) -> np.ndarray:
    wanted = [("left_hand", None), ("right_hand", None), ("chest", None), ("foot", None),
              ("other_radiograph", "knee"), ("other_radiograph", "skull"), ("not_radiograph", "photo"),
              ("not_radiograph", "document")]  # fmt: skip
    tiles = []
    for body_part, kind in wanted:
        for index in range(64):
            phantom = render_phantom(seed, index, body_part)
            if kind is None or phantom.kind == kind:
                break
        tiles.append(_label(_fit(_grey8(phantom.image), TILE), kind or body_part))
    return np.hstack(tiles)


def _registry_row(seed: int) -> np.ndarray:
    wanted = [("both_hands", "upright"), ("both_hands", "turned90"), ("left_hand", "turned270"),
              ("left_hand", "mirrored")]  # fmt: skip
    tiles = []
    for index, (body_part, how) in enumerate(wanted):
        phantom = store(render_phantom(seed, index, body_part), how)
        size = (2 * TILE[0], TILE[1]) if phantom.image.shape[1] > phantom.image.shape[0] else TILE
        tiles.append(_label(_fit(_grey8(phantom.image), size), f"{body_part} {how}"))
    return np.hstack(tiles)


def _score_row(seed: int, index: int, joint: str) -> np.ndarray:
    tiles = []
    for score in range(6):
        scores = dict.fromkeys(JOINT_NAMES, 0) | {joint: score}
        phantom = render_phantom(seed, index, "left_hand", scores=scores)
        x, y = (int(v) for v in phantom.centers[joint])
        # Two neighbouring-MCP distances wide: the joint and both bone ends.
        half = int(np.hypot(*np.subtract(phantom.centers["mcp2"], phantom.centers["mcp3"])) * 0.75)
        padded = np.pad(_grey8(phantom.image), half)
        crop = padded[y : y + 2 * half, x : x + 2 * half]
        tiles.append(_label(cv2.resize(crop, (CROP, CROP), interpolation=cv2.INTER_AREA), f"{joint} score {score}"))
    return np.hstack(tiles)


def make_contact_sheet(out: Path, seed: int = 7) -> Path:
    """Write the sheet as an 8-bit PNG and return its path."""
    classes = _class_row(seed)
    rows = [_registry_row(seed), _score_row(seed, 0, "mcp2"), _score_row(seed, 1, "pip3"), _score_row(seed, 2, "mcp5")]
    width = max(classes.shape[1], *(row.shape[1] for row in rows))
    sheet = np.vstack([np.pad(r, ((0, 4), (0, width - r.shape[1]))) for r in [classes, *rows]])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out
