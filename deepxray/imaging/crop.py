"""Joint crops: oriented squares around the ten scored joints, cut from the full-resolution image.

The crop size comes from the hand itself (the spacing of its MCP joints), so a joint fills the same share of
its crop whatever the detector's resolution, the patient's size or the magnification. Each crop is rotated so
that its finger points up, which takes the finger's pose out of what the scorer has to learn.
"""

import math
from collections.abc import Mapping

import cv2
import numpy as np

from deepxray.imaging.normalize import apply_window
from deepxray.labels import MCP_NEIGHBOURS

# Crop side as a multiple of the median spacing of neighbouring MCP joints: wide enough for the whole joint
# space, both bone ends and some soft tissue, narrow enough to keep the neighbouring fingers mostly out.
JOINT_CROP_FACTOR = 1.3
# Below this MCP-to-PIP distance (pixels) a finger has no measurable direction.
_MIN_AXIS_LENGTH = 1e-6

Point = tuple[float, float]


def mcp_spacing(centers: Mapping[str, Point]) -> float | None:
    """Median distance of the neighbouring MCP joints (`MCP_NEIGHBOURS`) present in `centers`; None if no pair is.

    The hand's size in pixels: the joint crop's side and the evaluation's localisation tolerance both scale with it.
    """
    distances = [
        math.dist(centers[first], centers[second])
        for first, second in MCP_NEIGHBOURS
        if first in centers and second in centers
    ]
    return float(np.median(distances)) if distances else None


def joint_crop_size(centers: Mapping[str, Point], factor: float = JOINT_CROP_FACTOR) -> float:
    """Side of a joint crop in image pixels, derived from the hand's own scale.

    Args:
        centers: Joint name to (x, y) image coordinates; needs at least one pair of neighbouring MCPs among
            mcp2-mcp3, mcp3-mcp4, mcp4-mcp5 (normally all three).
        factor: Crop side as a multiple of the median neighbouring-MCP distance.

    Returns:
        The crop side in pixels: median(|mcp2-mcp3|, |mcp3-mcp4|, |mcp4-mcp5|) * factor.

    Raises:
        ValueError: No neighbouring MCP pair, or the joints coincide.
    """
    spacing = mcp_spacing(centers)
    if spacing is None:
        raise ValueError("need at least one of the MCP pairs mcp2-mcp3, mcp3-mcp4, mcp4-mcp5")
    size = spacing * factor
    if not size > 0:
        raise ValueError(f"the MCP joints coincide; cannot derive a crop size (got {size})")
    return size


def finger_axis_angles(centers: Mapping[str, Point]) -> dict[str, float]:
    """Angle of each joint's finger axis, from the MCP and PIP of the same ray.

    Ray k runs from mcpk to pipk (k = 1..5; pip1 is the thumb's IP joint); both joints of a ray get its angle.
    Angles are in radians, 0 when the finger points straight up in the image (towards y = 0), positive when it
    leans towards +x (clockwise as displayed, since y points down). A ray whose two joints coincide gets 0.

    Args:
        centers: Joint name to (x, y) image coordinates for all ten joints.

    Returns:
        Joint name to angle, for all names in JOINT_NAMES.
    """
    angles: dict[str, float] = {}
    for ray in range(1, 6):
        mcp_x, mcp_y = centers[f"mcp{ray}"]
        pip_x, pip_y = centers[f"pip{ray}"]
        dx, dy = pip_x - mcp_x, pip_y - mcp_y
        angle = math.atan2(dx, -dy) if math.hypot(dx, dy) > _MIN_AXIS_LENGTH else 0.0
        angles[f"mcp{ray}"] = angles[f"pip{ray}"] = angle
    return angles


def crop_joint(
    image: np.ndarray,
    center: Point,
    size_px: float,
    out_size: int = 96,
    angle: float = 0.0,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Cuts an oriented square around a joint, rotated so that the finger axis points up in the crop.

    Only the region the square can reach is touched, so the cost does not depend on the image size. When the
    crop shrinks the image, that region is first resized with `cv2.INTER_AREA` (which averages what it merges)
    and then rotated with bilinear interpolation, which alone would alias thin bone edges. Outside the image
    the crop is 0, the same value the letterboxed views are padded with.

    Args:
        image: 2-D image, normally normalised float32 at full resolution.
        center: (x, y) of the joint in image pixels (pixel centres at integers); it lands in the crop's
            centre, ((out_size - 1) / 2, (out_size - 1) / 2).
        size_px: Side of the square in image pixels (see `joint_crop_size`).
        out_size: Side of the returned crop in pixels.
        angle: The finger axis angle (see `finger_axis_angles`); the crop is rotated by it.
        window: (low, high): `image` holds intensities as decoded, which the pixels the crop is cut from are
            mapped through first (`deepxray.imaging.normalize.apply_window`), so the crop holds the values it
            would have been cut from the normalised image; None: `image` is normalised already.

    Returns:
        float32 array (out_size, out_size).
    """
    if not size_px > 0 or out_size < 1:
        raise ValueError(f"size_px and out_size must be positive, got {size_px} and {out_size}")
    pixels = np.asarray(image)
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {pixels.shape}")
    height, width = pixels.shape
    center_x, center_y = float(center[0]), float(center[1])
    cos, sin = math.cos(angle), math.sin(angle)

    # The rotated square's half-extent along x and y, plus two pixels for the interpolation footprint.
    reach = size_px / 2 * (abs(cos) + abs(sin)) + 2
    x0, x1 = max(0, math.floor(center_x - reach)), min(width, math.ceil(center_x + reach) + 1)
    y0, y1 = max(0, math.floor(center_y - reach)), min(height, math.ceil(center_y + reach) + 1)
    if x0 >= x1 or y0 >= y1:
        return np.zeros((out_size, out_size), dtype=np.float32)
    region = pixels[y0:y1, x0:x1]
    region = region.astype(np.float32) if window is None else apply_window(region, *window)

    # Output pixel q maps to image point center + step * R (q - crop centre), R turning the crop's up (0, -1)
    # into the finger direction (sin, -cos).
    step = size_px / out_size
    rotation = step * np.array([[cos, -sin], [sin, cos]])
    crop_center = (out_size - 1) / 2
    shift = np.array([center_x - x0, center_y - y0]) - rotation @ np.array([crop_center, crop_center])

    scale = np.ones(2)
    if step > 1.0:
        region_height, region_width = region.shape
        new_width = max(1, round(region_width / step))
        new_height = max(1, round(region_height / step))
        region = cv2.resize(region, (new_width, new_height), interpolation=cv2.INTER_AREA)
        scale = np.array([new_width / region_width, new_height / region_height])
    # Region pixel p lands at (p + 0.5) * scale - 0.5 in the resized region (cv2.resize's pixel-centre rule).
    matrix = np.hstack([scale[:, None] * rotation, (scale * (shift + 0.5) - 0.5)[:, None]])
    return cv2.warpAffine(
        region,
        matrix,
        (out_size, out_size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
