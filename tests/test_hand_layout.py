"""The hand-shape gate: the ten joints found must form a hand before anything is scored."""

from __future__ import annotations

import numpy as np
import pytest

from deepxray.hand_layout import layout_problems
from deepxray.phantoms.phantom import render_phantom

SMALL = (640, 512)


def left_oriented(phantom) -> dict[str, tuple[float, float]]:
    """The phantom's true joint centres as the detector's view shows them: a right hand mirrored."""
    sign = 1.0 if phantom.laterality == "L" else -1.0
    return {name: (sign * x, y) for name, (x, y) in phantom.centers.items()}


@pytest.fixture(scope="module")
def hands() -> list[dict[str, tuple[float, float]]]:
    body_parts = ("left_hand", "right_hand")
    return [left_oriented(render_phantom(31, i, body_parts[i % 2], shape=SMALL)) for i in range(120)]


def turned(centers, angle: float, scale: float = 1.0, shift=(0.0, 0.0)):
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return {name: tuple(rotation @ np.asarray(xy) + shift) for name, xy in centers.items()}


def test_every_phantom_hand_passes_at_any_angle_size_and_place(hands):
    rng = np.random.default_rng(0)
    for centers in hands:
        assert layout_problems(centers) == []
        moved = turned(centers, rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 5.0), rng.uniform(-500, 500, 2))
        assert layout_problems(moved) == []


def test_a_mirror_image_hand_is_refused_as_such(hands):
    for centers in hands[:20]:
        mirrored = {name: (-x, y) for name, (x, y) in centers.items()}
        assert layout_problems(mirrored) == ["the joints form a mirror image of the hand the body-part model saw"]


def test_scattered_points_are_refused():
    rng = np.random.default_rng(1)
    names = [f"{kind}{k}" for kind in ("mcp", "pip") for k in range(1, 6)]
    for _ in range(200):
        assert layout_problems({name: tuple(rng.uniform(0, 256, 2)) for name in names})


def test_each_anatomical_rule_names_what_is_wrong(hands):
    centers = hands[0]
    swapped = {**centers, "pip3": centers["pip4"], "pip4": centers["pip3"]}
    assert "the PIP joints are not in finger order" in layout_problems(swapped)
    mcp = np.asarray(centers["mcp3"]), np.asarray(centers["pip3"])
    short = {**centers, "pip3": tuple(mcp[0] + 0.1 * (mcp[1] - mcp[0]))}
    assert layout_problems(short) == ["a PIP joint is not where its finger would put it"]
    # The thumb's MCP moved up into the row of the finger joints.
    thumb_up = {**centers, "mcp1": tuple(np.asarray(centers["mcp2"]) + (np.asarray(centers["mcp2"]) - centers["mcp3"]))}
    assert "the thumb's MCP joint is not below the finger joints" in layout_problems(thumb_up)
    collapsed = {**centers, "mcp3": centers["mcp2"]}
    assert layout_problems(collapsed) == ["the MCP joints lie on top of each other"]
