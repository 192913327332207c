"""Ratingen scores for the ten joints of one hand, drawn from a named distribution."""

from __future__ import annotations

import numpy as np

from deepxray.labels import JOINT_NAMES, RATINGEN_CLASSES

DISTRIBUTIONS = ("clinical", "balanced")

# Registry hands are mostly intact and damage clusters within a hand. A two-state mixture reproduces the grade
# frequencies derived in `shared/docs/hand-radiographs.md` (0: 67.5 %, 1: 27.2 %, 2: 2.3 %, 3: 1.0 %, 4: 0.6 %,
# 5: 1.35 %): 85 % of hands are intact or mildly affected, 15 % carry the erosive damage.
MILD_HAND = np.array([0.74, 0.26, 0.0, 0.0, 0.0, 0.0])
DAMAGED_HAND = np.array([0.31, 0.34, 0.153, 0.067, 0.04, 0.09])
DAMAGED_SHARE = 0.15
# Erosions favour MCP2, MCP3 and PIP3: in a damaged hand these joints shift towards higher grades.
FAVOURED_JOINTS = frozenset({"mcp2", "mcp3", "pip3"})


def draw_scores(rng: np.random.Generator, distribution: str) -> dict[str, int]:
    """Scores for MCP1..PIP5 (see `DISTRIBUTIONS`)."""
    if distribution == "balanced":
        return {name: int(rng.integers(0, len(RATINGEN_CLASSES))) for name in JOINT_NAMES}
    if distribution != "clinical":
        raise ValueError(f"unknown score distribution {distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    damaged = rng.random() < DAMAGED_SHARE
    scores = {}
    for name in JOINT_NAMES:
        probs = DAMAGED_HAND if damaged else MILD_HAND
        if damaged and name in FAVOURED_JOINTS:
            # Move a third of the intact mass to the erosive grades, keeping their ratios.
            shifted = probs.copy()
            shifted[0] *= 2.0 / 3.0
            shifted[2:] += probs[0] / 3.0 * probs[2:] / probs[2:].sum()
            probs = shifted
        scores[name] = int(rng.choice(len(RATINGEN_CLASSES), p=probs))
    return scores
