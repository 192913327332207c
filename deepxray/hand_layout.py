"""Is this a hand? The ten joints the detector found must form one, before anything is scored.

The body-part model's probability alone says little about images unlike its training films (a bone scan, a
photograph of a hand, a hand in an unusual pose): it can be high for any of them. Ten joints found with
confidence in a hand-shaped layout is evidence that a real hand yields and other images almost never do.

All measures are in units of the hand's own MCP spacing (the median distance of neighbouring MCP joints), so
they hold for any film size and hand size, and are taken in the detector's view, where every hand is shown as a
left hand (a right hand mirrored), fingers up or down, turned by any angle:

- the MCP row: MCP2..MCP5 in order along the row, each neighbouring gap within `MAX_GAP_RATIO` of the others;
- the fingers: each PIP2..PIP5 beyond its MCP on the same side of the row, `FINGER` spacings out, in order;
- the thumb: MCP1 on the wrist's side of the row (`THUMB_BELOW_ROW`), PIP1 `THUMB` spacings from it;
- the hand's chirality: seen as a left hand (thumb, index to little finger turning the way a left hand's do).
  A right hand shown unmirrored, or a left hand mirrored, fails this: its laterality is then unclear.

The bounds hold every hand of 200 phantoms with a wide margin (the phantoms' extremes, in spacings: gap ratio 2.3,
finger 1.3-2.7, thumb MCP 2.0-4.3 below the row, thumb 1.4-2.1 long); they are loose on purpose, so that real
anatomy and poses beyond the phantoms' pass, while a scatter of points does not.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

MAX_GAP_RATIO = 3.0  # largest neighbouring-MCP gap over the smallest
MIN_ORDER_GAP = 0.25  # least step, in spacings, between neighbouring MCPs (and PIPs) along the row
FINGER = (0.7, 4.0)  # MCP to PIP along the finger, in spacings
THUMB_BELOW_ROW = (0.8, 6.0)  # MCP1's distance from the MCP row towards the wrist, in spacings
THUMB = (0.6, 3.5)  # MCP1 to PIP1, in spacings
# An upright hand's fingers point up within this many degrees: phantoms lean by up to 25 degrees, and a film
# placed 20 degrees askew adds that (45 in all); a film stored turned by 90 degrees shows them at 65 or more.
MAX_FINGER_TILT_DEG = 55.0


def layout_problems(centers: Mapping[str, tuple[float, float]]) -> list[str]:
    """What keeps the ten joint centres (x, y, one left-oriented view or image) from forming a left hand; empty
    when they form one. Each problem is a phrase a user understands."""
    p = {name: np.asarray(xy, dtype=np.float64) for name, xy in centers.items()}
    gaps = [float(np.linalg.norm(p[f"mcp{k + 1}"] - p[f"mcp{k}"])) for k in range(2, 5)]
    spacing = float(np.median(gaps))
    if not spacing > 0 or min(gaps) <= 0:
        return ["the MCP joints lie on top of each other"]
    row = (p["mcp5"] - p["mcp2"]) / np.linalg.norm(p["mcp5"] - p["mcp2"])
    finger = np.array([row[1], -row[0]])  # perpendicular to the row; its sign is the fingers' side, found below
    reach = [float((p[f"pip{k}"] - p[f"mcp{k}"]) @ finger) / spacing for k in range(2, 6)]
    if np.mean(reach) < 0:
        finger, reach = -finger, [-r for r in reach]

    problems = []
    if max(gaps) / min(gaps) > MAX_GAP_RATIO:
        problems.append("the MCP joints are unevenly spaced")
    if min(np.diff([p[f"mcp{k}"] @ row for k in range(2, 6)])) / spacing < MIN_ORDER_GAP:
        problems.append("the MCP joints are not in finger order")
    if min(np.diff([p[f"pip{k}"] @ row for k in range(2, 6)])) / spacing < MIN_ORDER_GAP:
        problems.append("the PIP joints are not in finger order")
    if not all(FINGER[0] <= r <= FINGER[1] for r in reach):
        problems.append("a PIP joint is not where its finger would put it")
    below = -float((p["mcp1"] - p["mcp2"]) @ finger) / spacing
    if not THUMB_BELOW_ROW[0] <= below <= THUMB_BELOW_ROW[1]:
        problems.append("the thumb's MCP joint is not below the finger joints")
    if not THUMB[0] <= float(np.linalg.norm(p["pip1"] - p["mcp1"])) / spacing <= THUMB[1]:
        problems.append("the thumb's joints are too close or too far apart")
    if row[0] * finger[1] - row[1] * finger[0] < 0:
        problems.append("the joints form a mirror image of the hand the body-part model saw")
    return problems


def finger_tilt_deg(centers: Mapping[str, tuple[float, float]]) -> float:
    """How far (degrees, 0..180) the fingers (MCP2..5 to PIP2..5, on average) point away from straight up."""
    direction = np.mean([np.subtract(centers[f"pip{k}"], centers[f"mcp{k}"]) for k in range(2, 6)], axis=0)
    return float(np.degrees(np.arccos(np.clip(-direction[1] / (np.linalg.norm(direction) or 1.0), -1.0, 1.0))))
