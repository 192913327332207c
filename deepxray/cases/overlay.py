"""Pictures of a scored film: the windowed, downscaled viewing image (the case store's preview, and what an overlay
is drawn on), and the overlay itself: each hand's box, each joint coloured by its Ratingen grade and labelled with
its name, grade and probability, a reviewer's corrections, a legend, and the research-use notice with the model
versions in a band at the bottom.

Coordinates: the answer gives positions in the film's pixels (as stored, i.e. as decoded); an image of the film
at `scale` image pixels per film pixel shows film position p at (p + 0.5) * scale - 0.5 (pixel centres map onto
pixel centres, as OpenCV's area resampling does).

Everything is drawn with OpenCV, in BGR order (what `cv2.imencode` writes) and with its own fonts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from deepxray.cases.records import FilmImage, ImageKind
from deepxray.labels import JOINT_NAMES, RESEARCH_NOTICE

# The longest side of a viewing image unless told otherwise (the `preview_max_side` setting's default).
DEFAULT_MAX_SIDE = 1024
# The intensity window of a viewing image: these percentiles of the film become black and white, so a few hot
# pixels, burnt-in labels or collimator edges do not set the contrast (as `deepxray.imaging.normalize`).
WINDOW_PERCENTILES = (0.5, 99.5)
# The window is estimated on about this many pixels of the downscaled image (a regular grid).
_WINDOW_SAMPLES = 2**16

# PNG, fast: zlib level 1 and the SUB row filter. A grey picture also with the RLE strategy: a 1024-pixel preview
# encodes in about 10-14 ms here, against about 20 ms with libpng's adaptive filters, in files about as large (the
# 16-bit original: about 0.17 s against 0.24 s). An overlay (colour) with the default strategy, which makes it a
# third smaller than RLE does, in the same time (about 35 ms). The filter option is OpenCV >= 4.11's; older
# versions use their default.
_PNG_GREY = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
_PNG_COLOUR = [cv2.IMWRITE_PNG_COMPRESSION, 1]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):
    _PNG_GREY += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
    _PNG_COLOUR += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]

# Colour of each Ratingen grade 0..5 (BGR): ColorBrewer's RdYlBu ramp, blue -> yellow -> red, without its pale
# middle (invisible on bone). The ramp is colour-blind safe, and every label also writes the grade.
SCORE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (180, 117, 69),  # 0  #4575b4
    (219, 191, 145),  # 1  #91bfdb
    (144, 224, 254),  # 2  #fee090
    (97, 174, 253),  # 3  #fdae61
    (67, 109, 244),  # 4  #f46d43
    (39, 48, 215),  # 5  #d73027
)
HAND_COLOUR = (215, 215, 215)  # a scored hand's box: neutral light grey
NOT_SCORED_COLOUR = (150, 150, 150)  # a hand found but not scored: dashed, darker grey
CORRECTION_COLOUR = (255, 255, 255)  # the outline of a joint whose reviewed grade differs from the model's
TEXT_COLOUR = (255, 255, 255)
NOTICE_COLOUR = (80, 220, 255)  # the research-use notice: amber on black
HALO_COLOUR = (0, 0, 0)

# A joint is drawn as the middle of its scored crop: the crop is about two joint spacings wide, so whole crops
# would cover their neighbours. This share of the crop's side is a little less than one spacing.
JOINT_BOX_SHARE = 0.4
# The stored preview is a JPEG: it encodes in about 2 ms where a PNG of the same 8-bit preview took 9-19 ms on
# this machine, on every stored film. At 95 it differs from the viewing image by about one grey level, well
# under the film's own noise; training already sees JPEGs of quality 55-95 (deepxray.training.data.degrade).
PREVIEW_JPEG_QUALITY = 95
# How much a label's background darkens the film under it (0: not at all, 1: black).
_LABEL_SHADE = 0.7
_ARROW = "\u2192"  # "→", which the Hershey fonts lack: drawn as a line with a head


def viewing_image(pixels: np.ndarray, max_side: int = DEFAULT_MAX_SIDE) -> tuple[np.ndarray, float]:
    """The film as a person looks at it: downscaled, then windowed to 8 bits.

    The integer image is downscaled first (OpenCV's area resampling, in an exact integer step and a small
    remainder) and only the small one is windowed, which keeps this at a few milliseconds for a full-size film.

    Args:
        pixels: The decoded film, 2-D: uint8, uint16 or float32 (MONOCHROME1 already inverted: bone bright).
        max_side: The longest side of the result, pixels; a smaller film is not enlarged.

    Returns:
        (image, scale): a uint8 2-D image whose longest side is at most `max_side`, with the film's aspect ratio,
        and its pixels per film pixel (1.0 when the film was small enough already).

    Raises:
        ValueError: For an image that is not 2-D or is empty, or a `max_side` below 1.
    """
    small, scale = _downscale(np.asarray(pixels), max_side)
    return _window(small), scale


def preview_image(view: np.ndarray, scale: float) -> FilmImage:
    """A viewing image (`viewing_image`) as the stored preview: an 8-bit JPEG (`PREVIEW_JPEG_QUALITY`), no
    metadata (OpenCV writes a bare JFIF header)."""
    ok, data = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_JPEG_QUALITY])
    if not ok:
        raise ValueError(f"could not encode a {view.dtype} image of shape {view.shape} as JPEG")
    return FilmImage(encoded=data.tobytes(), kind="preview", scale=scale)


def film_image(pixels: np.ndarray, kind: ImageKind, max_side: int = DEFAULT_MAX_SIDE) -> FilmImage:
    """The picture of a film that the case store keeps.

    Args:
        pixels: The decoded film, 2-D (as `viewing_image`).
        kind: "preview": the viewing image (8-bit, longest side at most `max_side`); "original": the decoded
            pixels at full size, 8 or 16 bit as decoded (a float32 film is kept as its viewing image's window
            applied at full size, 8 bits).
        max_side: The preview's longest side.

    Returns:
        The PNG (OpenCV writes no metadata: no date, no text chunks) with its kind and scale.

    Raises:
        ValueError: For another `kind`, or an image `viewing_image` refuses.
    """
    if kind == "preview":
        return preview_image(*viewing_image(pixels, max_side))
    if kind == "original":
        pixels = np.asarray(pixels)
        _check_film(pixels)
        if pixels.dtype not in (np.uint8, np.uint16):
            pixels = _window(pixels)  # PNG holds integers only
        return FilmImage(encoded=_encode_png(pixels), kind="original", scale=1.0)
    raise ValueError(f"kind must be 'preview' or 'original', got {kind!r}")


def image_for_overlay(image: FilmImage, max_side: int = DEFAULT_MAX_SIDE) -> tuple[np.ndarray, float]:
    """A stored picture decoded back to a viewing image, to draw an overlay on.

    Args:
        image: A stored `FilmImage`.
        max_side: The longest side of the result: an "original" goes through `viewing_image`; a preview is
            only downscaled (never windowed again) when it is larger.

    Returns:
        (uint8 2-D image, image pixels per film pixel).

    Raises:
        ValueError: When the PNG cannot be decoded.
    """
    decoded = cv2.imdecode(np.frombuffer(image.encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ValueError("the stored picture is not a readable image")
    if decoded.ndim == 3:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2GRAY if decoded.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    if image.kind == "preview" and decoded.dtype == np.uint8:
        small, factor = _downscale(decoded, max_side)
    else:
        small, factor = viewing_image(decoded, max_side)
    return small, image.scale * factor


def film_to_image(values: Sequence[float], scale: float) -> np.ndarray:
    """Film positions (x, y, ... in film pixels) to image positions, float: (p + 0.5) * scale - 0.5."""
    return (np.asarray(values, np.float64) + 0.5) * scale - 0.5


def overlay_png(
    view: np.ndarray, scale: float, answer: Mapping, reviews: Mapping[tuple[int, str], int] | None = None
) -> bytes:
    """`draw_overlay` encoded as a PNG (no metadata)."""
    return _encode_png(draw_overlay(view, scale, answer, reviews))


def draw_overlay(
    view: np.ndarray, scale: float, answer: Mapping, reviews: Mapping[tuple[int, str], int] | None = None
) -> np.ndarray:
    """An answer drawn on a viewing image of its film.

    Each scored hand gets a thin box with its laterality and confidence; each joint a box coloured by its
    Ratingen grade (`SCORE_COLOURS`; the middle `JOINT_BOX_SHARE` of its scored crop) and a label "mcp2 3 (0.87)":
    the joint, its grade and the probability of that grade, placed beside it where it covers no other joint or
    label. A hand found but not scored gets a dashed grey box with its reason code. A reviewed grade that differs
    from the model's is drawn "2→3" in the reviewed grade's colour, with a white outline round box and label. A
    legend of the colours sits in the corner where it covers least of the hands, and a band below the film carries the
    research-use notice and the model versions.

    Args:
        view: The viewing image, uint8, 2-D grey or 3-channel BGR (`viewing_image`, `image_for_overlay`).
        scale: Its pixels per film pixel.
        answer: The `/score` answer (a dict as the client got it): `hands`, `hands_not_scored`, `models`.
        reviews: (hand index, joint) -> reviewed grade; None or empty: the model's grades only.

    Returns:
        A BGR uint8 image: the view, with the notice band below it (so taller than `view`).
    """
    film = view if view.ndim == 3 else cv2.cvtColor(view, cv2.COLOR_GRAY2BGR)
    height, width = film.shape[:2]
    style = _Style.for_size(width, height)
    band = _notice_band(width, style, answer.get("models") or {})
    canvas = np.vstack([film, band])
    picture = canvas[:height]  # a view: drawing on it draws on the canvas
    reviews = reviews or {}

    joints = [
        _joint_mark(h, name, joint, scale, style, reviews)
        for h, hand in enumerate(answer.get("hands") or [])
        for name, joint in _ordered(hand.get("joints") or {})
    ]
    taken = [mark.box for mark in joints]
    for hand in answer.get("hands_not_scored") or []:
        taken.append(_draw_not_scored(picture, hand, scale, style))
    for hand in answer.get("hands") or []:
        taken.append(_draw_hand(picture, hand, scale, style))
    hand_boxes = [_image_box(hand["box"], scale) for hand in answer.get("hands") or []]
    taken.append(_draw_legend(picture, style, hand_boxes + taken))
    centres = _hand_centres(answer, scale)
    placed = []
    for mark in sorted(joints, key=lambda m: -_distance(m.centre, centres[m.hand])):  # the outermost first
        placed.append((mark, _place_label(picture, mark, centres[mark.hand], taken, style)))
        taken.append(placed[-1][1])
    for mark, label in placed:  # the lines first: no line crosses a joint's box or a label's text
        _leader(picture, mark, label, style)
    for mark in joints:
        _draw_joint_box(picture, mark, style)
    for mark, label in placed:
        _draw_label(picture, mark, label, style)
    return canvas


# --- the viewing image -----------------------------------------------------------------------------------------


def _check_film(pixels: np.ndarray) -> None:
    if pixels.ndim != 2 or pixels.size == 0:
        raise ValueError(f"a film is a non-empty 2-D image, got shape {pixels.shape}")


def _downscale(pixels: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """`pixels` area-resampled so that its longest side is at most `max_side`, and the scale (1.0: unchanged).

    OpenCV's area resampling by an integer factor is a fast special case (a 2048 x 2560 uint16 film halves in
    well under a millisecond, where a factor of 2.5 takes several): the integer part of the reduction goes first,
    on the film cut to a multiple of it (at most factor - 1 pixels off its right and bottom edges), the remainder
    second. Both keep (p + 0.5) * scale - 0.5, so the scale is exact.
    """
    _check_film(pixels)
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    if pixels.dtype not in (np.uint8, np.uint16, np.float32):
        pixels = pixels.astype(np.float32)
    height, width = pixels.shape
    if max(height, width) <= max_side:
        return pixels, 1.0
    scale = max_side / max(height, width)
    step = min(int(1.0 / scale), height, width)
    rest = scale
    if step >= 2:
        cut = pixels[: height - height % step, : width - width % step]
        pixels = cv2.resize(cut, (width // step, height // step), interpolation=cv2.INTER_AREA)
        rest = scale * step
    if not math.isclose(rest, 1.0):
        rows, columns = pixels.shape
        if round(rows * rest) >= 1 and round(columns * rest) >= 1:
            pixels = cv2.resize(pixels, None, fx=rest, fy=rest, interpolation=cv2.INTER_AREA)
        else:  # a film a few pixels thin: keep one row or column
            size = (max(1, round(columns * rest)), max(1, round(rows * rest)))
            pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return pixels, scale


def _window(image: np.ndarray) -> np.ndarray:
    """`image` to uint8 between its `WINDOW_PERCENTILES` (estimated on a subsample); a flat image is black."""
    step = max(1, int(math.sqrt(image.size / _WINDOW_SAMPLES)))
    sample = image[::step, ::step]
    if image.dtype.kind == "f":
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            return np.zeros(image.shape, np.uint8)
    low, high = (float(v) for v in np.percentile(sample, WINDOW_PERCENTILES))
    if not high > low:  # mostly flat: the full range, flat only for a constant image
        low, high = float(np.min(sample)), float(np.max(sample))
        if not high > low:
            return np.zeros(image.shape, np.uint8)
    gain = 255.0 / (high - low)
    if image.dtype.kind == "u":
        # Saturating subtraction, then scaling with rounding and saturation at 255: two fast passes.
        return cv2.convertScaleAbs(cv2.subtract(image, np.array(math.floor(low), image.dtype)), alpha=gain)
    stretched = (np.nan_to_num(image, nan=low, posinf=high, neginf=low) - np.float32(low)) * np.float32(gain)
    return np.clip(stretched + 0.5, 0, 255).astype(np.uint8)


def _encode_png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image, _PNG_GREY if image.ndim == 2 else _PNG_COLOUR)
    if not ok:
        raise ValueError(f"could not encode a {image.dtype} image of shape {image.shape} as PNG")
    return data.tobytes()


# --- drawing -----------------------------------------------------------------------------------------------------

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels, inclusive


@dataclass(frozen=True)
class _Style:
    """Sizes that follow the picture's size: text stays legible on a small preview and a full-size film alike."""

    font_scale: float
    thickness: int  # text
    box: int  # joint boxes
    line: int  # hand boxes, leader lines
    pad: int  # around text

    @classmethod
    def for_size(cls, width: int, height: int) -> _Style:
        # A capital is about 22 * font_scale pixels tall: about 1.1 % of the longest side (12 px on a 1024-pixel
        # preview), never under 8 px.
        font_scale = max(0.36, max(width, height) / 1900)
        return cls(
            font_scale=font_scale,
            thickness=max(1, round(font_scale * 1.6)),
            box=max(2, round(font_scale * 3)),
            line=max(1, round(font_scale * 1.6)),
            pad=max(2, round(8 * font_scale)),
        )

    def text_size(self, text: str, font_scale: float | None = None) -> tuple[int, int, int]:
        """(width, cap height, baseline) of `text`, "→" included."""
        font_scale = font_scale or self.font_scale
        plain = text.replace(_ARROW, "->")
        (width, height), baseline = cv2.getTextSize(plain, _FONT, font_scale, self.thickness)
        return width, height, baseline


_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class _JointMark:
    hand: int
    name: str
    centre: tuple[float, float]
    box: Box
    colour: tuple[int, int, int]
    text: str
    corrected: bool


def _ordered(joints: Mapping[str, Mapping]) -> list[tuple[str, Mapping]]:
    """The joints in `JOINT_NAMES` order (any others after them)."""
    rank = {name: i for i, name in enumerate(JOINT_NAMES)}
    return sorted(joints.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def _joint_mark(
    hand: int, name: str, joint: Mapping, scale: float, style: _Style, reviews: Mapping[tuple[int, str], int]
) -> _JointMark:
    """Where and how one joint is drawn."""
    model = int(joint["score"])
    reviewed = reviews.get((hand, name), model)
    probability = float(joint["probabilities"][model])
    cx, cy = film_to_image(joint["center"], scale)
    x0, y0, x1, y1 = joint["box"]
    half = max(3.0, JOINT_BOX_SHARE * max(x1 - x0, y1 - y0) * scale / 2, 2.0 * style.box)
    box = (round(cx - half), round(cy - half), round(cx + half), round(cy + half))
    grade = f"{model}{_ARROW}{reviewed}" if reviewed != model else f"{model}"
    colour = SCORE_COLOURS[min(max(int(reviewed), 0), 5)]
    return _JointMark(hand, name, (cx, cy), box, colour, f"{name} {grade} ({probability:.2f})", reviewed != model)


def _image_box(box: Sequence[float], scale: float) -> Box:
    x0, y0, x1, y1 = film_to_image(box, scale)
    return round(x0), round(y0), round(x1), round(y1)


def _hand_centres(answer: Mapping, scale: float) -> list[tuple[float, float]]:
    """The middle of each scored hand's joints, image pixels: labels point away from it."""
    centres = []
    for hand in answer.get("hands") or []:
        points = [film_to_image(j["center"], scale) for j in (hand.get("joints") or {}).values()]
        centres.append(tuple(np.mean(points, axis=0)) if points else (0.0, 0.0))
    return centres


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def _rectangle(image: np.ndarray, box: Box, colour, thickness: int, halo: tuple[int, int, int] | None = None) -> None:
    """A rectangle, over a one-pixel-wider dark (or other) outline on each side so it shows on any film."""
    x0, y0, x1, y1 = box
    if halo is not None:
        cv2.rectangle(image, (x0, y0), (x1, y1), halo, thickness + 2, cv2.LINE_AA)
    cv2.rectangle(image, (x0, y0), (x1, y1), colour, thickness, cv2.LINE_AA)


def _dashed_rectangle(image: np.ndarray, box: Box, colour, thickness: int, dash: int) -> None:
    x0, y0, x1, y1 = box
    for (ax, ay), (bx, by) in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, length, 2 * dash):
            end = min(start + dash, length)
            p = (ax + (bx - ax) * start // max(length, 1), ay + (by - ay) * start // max(length, 1))
            q = (ax + (bx - ax) * end // max(length, 1), ay + (by - ay) * end // max(length, 1))
            cv2.line(image, p, q, colour, thickness, cv2.LINE_AA)


def _put_text(image: np.ndarray, text: str, origin: tuple[int, int], colour, style: _Style, font_scale=None) -> None:
    """`text` with its baseline's left end at `origin`; "→" drawn as an arrow."""
    font_scale = font_scale or style.font_scale
    x, y = origin
    parts = text.split(_ARROW)
    for index, part in enumerate(parts):
        if part:
            cv2.putText(image, part, (x, y), _FONT, font_scale, colour, style.thickness, cv2.LINE_AA)
            x += cv2.getTextSize(part, _FONT, font_scale, style.thickness)[0][0]
        if index < len(parts) - 1:
            arrow = cv2.getTextSize("->", _FONT, font_scale, style.thickness)[0][0]
            middle = y - round(8 * font_scale)
            cv2.arrowedLine(
                image, (x + 1, middle), (x + arrow - 1, middle), colour, style.thickness, cv2.LINE_AA, tipLength=0.45
            )
            x += arrow


def _shade(image: np.ndarray, box: Box) -> None:
    """Darkens `box` of `image` (clipped to it), so that text on it reads on bright bone."""
    x0, y0, x1, y1 = _clip(box, image.shape[1], image.shape[0])
    if x1 > x0 and y1 > y0:
        region = image[y0:y1, x0:x1]
        region[:] = (region * (1.0 - _LABEL_SHADE)).astype(np.uint8)


def _clip(box: Box, width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    return max(0, x0), max(0, y0), min(width, x1 + 1), min(height, y1 + 1)


def _text_box(style: _Style, text: str, left: int, top: int, font_scale: float | None = None) -> tuple[Box, tuple]:
    """The padded box of a one-line label with its top-left corner at (left, top), and its text's origin."""
    width, cap, baseline = style.text_size(text, font_scale)
    box = (left, top, left + width + 2 * style.pad, top + cap + baseline + 2 * style.pad)
    return box, (left + style.pad, top + style.pad + cap)


def _label_at(image: np.ndarray, style: _Style, text: str, left: int, top: int, colour=TEXT_COLOUR) -> Box:
    box, origin = _text_box(style, text, left, top)
    _shade(image, box)
    _put_text(image, text, origin, colour, style)
    return box


def _draw_hand(image: np.ndarray, hand: Mapping, scale: float, style: _Style) -> Box:
    """A scored hand's box and "L 0.89" above its top-left corner (inside it where the film ends); the label's box."""
    box = _image_box(hand["box"], scale)
    _rectangle(image, box, HAND_COLOUR, style.line)
    text = f"{hand['laterality']} {float(hand['confidence']):.2f}"
    return _corner_label(image, style, text, box, HAND_COLOUR)


def _draw_not_scored(image: np.ndarray, hand: Mapping, scale: float, style: _Style) -> Box:
    """A hand found but not scored: a dashed grey box and its reason code; the label's box."""
    box = _image_box(hand["box"], scale)
    _dashed_rectangle(image, box, NOT_SCORED_COLOUR, style.line, dash=max(4, round(14 * style.font_scale)))
    return _corner_label(image, style, f"not scored: {hand['error']}", box, NOT_SCORED_COLOUR)


def _corner_label(image: np.ndarray, style: _Style, text: str, box: Box, colour) -> Box:
    label, _ = _text_box(style, text, 0, 0)
    height = label[3] - label[1]
    top = box[1] - height - style.line if box[1] - height - style.line >= 0 else box[1] + style.line
    left = min(max(0, box[0]), max(0, image.shape[1] - (label[2] - label[0]) - 1))
    return _label_at(image, style, text, left, top, colour)


def _draw_joint_box(image: np.ndarray, mark: _JointMark, style: _Style) -> None:
    halo = CORRECTION_COLOUR if mark.corrected else HALO_COLOUR
    _rectangle(image, mark.box, mark.colour, style.box, halo)


def _overlaps(candidates: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Area of each candidate box (rows of x0, y0, x1, y1) covered by the taken boxes, summed."""
    if taken.size == 0:
        return np.zeros(len(candidates))
    x0 = np.maximum(candidates[:, None, 0], taken[None, :, 0])
    y0 = np.maximum(candidates[:, None, 1], taken[None, :, 1])
    x1 = np.minimum(candidates[:, None, 2], taken[None, :, 2])
    y1 = np.minimum(candidates[:, None, 3], taken[None, :, 3])
    return (np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)).sum(axis=1)


def _outside(candidates: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area of each candidate box outside the picture."""
    area = (candidates[:, 2] - candidates[:, 0]) * (candidates[:, 3] - candidates[:, 1])
    inside = _overlaps(candidates, np.array([[0, 0, width - 1, height - 1]], np.float64))
    return area - inside


def _label_candidates(mark: _JointMark, away: tuple[float, float], size: tuple[int, int], style) -> np.ndarray:
    """Boxes where a label of `size` could go beside its joint, the preferred first: along the line from the
    hand's middle through the joint (so labels fan out from the hand), then turning further from it; each box
    touches a circle round the joint from the outside, the circle growing when no place near it is free."""
    width, height = size
    x0, y0, x1, y1 = mark.box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = (x1 - x0) / 2
    heading = math.atan2(cy - away[1], cx - away[0]) if _distance((cx, cy), away) > 1 else -math.pi / 2
    turns = [0.0] + [sign * step for step in (20, 40, 60, 80, 100, 120, 140, 160) for sign in (1, -1)] + [180.0]
    boxes = []
    gap = style.pad + style.box
    for ring in range(6):
        radius = half + gap + ring * (height + gap)
        for turn in turns:
            angle = heading + math.radians(turn)
            dx, dy = math.cos(angle), math.sin(angle)
            # The point of the circle in this direction, and the box beside it on that side.
            px, py = cx + dx * radius, cy + dy * radius
            left = px - width / 2 + dx * width / 2
            top = py - height / 2 + dy * height / 2
            boxes.append((left, top, left + width, top + height))
    return np.array(boxes, np.float64)


def _place_label(image: np.ndarray, mark: _JointMark, away: tuple[float, float], taken: list[Box], style) -> Box:
    """Where a joint's label goes: the first place beside the joint that covers nothing taken and stays on the
    picture, or the least covered one when none is free."""
    box, _ = _text_box(style, mark.text, 0, 0)
    width, height = box[2] - box[0], box[3] - box[1]
    candidates = _label_candidates(mark, away, (width, height), style)
    cost = _overlaps(candidates, np.array(taken, np.float64)) + 4 * _outside(candidates, *image.shape[1::-1])
    left, top = (round(v) for v in candidates[int(np.argmin(cost))][:2])  # argmin: the first of the free ones
    left = min(max(0, left), image.shape[1] - width - 1)
    top = min(max(0, top), image.shape[0] - height - 1)
    return left, top, left + width, top + height


def _draw_label(image: np.ndarray, mark: _JointMark, label: Box, style: _Style) -> None:
    """A joint's label in its place: the text on a dark ground, a bar in the joint's colour on its left, and a
    white outline when a reviewer corrected the grade."""
    left, top, right, bottom = label
    _label_at(image, style, mark.text, left, top)
    cv2.rectangle(image, (left, top), (left + max(2, style.pad // 2), bottom), mark.colour, -1)
    if mark.corrected:
        cv2.rectangle(image, (left, top), (right, bottom), CORRECTION_COLOUR, style.line, cv2.LINE_AA)


def _leader(image: np.ndarray, mark: _JointMark, label: Box, style: _Style) -> None:
    """A line from the joint's box to its label, where they do not touch."""
    x0, y0, x1, y1 = mark.box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    lx, ly = min(max(cx, label[0]), label[2]), min(max(cy, label[1]), label[3])  # the label's point nearest
    bx, by = min(max(lx, x0), x1), min(max(ly, y0), y1)  # the box's point nearest that
    if _distance((lx, ly), (bx, by)) > 2 * style.line:
        start, end = (round(bx), round(by)), (round(lx), round(ly))
        cv2.line(image, start, end, HALO_COLOUR, style.line + 2, cv2.LINE_AA)
        cv2.line(image, start, end, mark.colour, style.line, cv2.LINE_AA)


def _draw_legend(image: np.ndarray, style: _Style, avoid: list[Box]) -> Box:
    """The colour of each grade, in the corner of the picture that covers the least of `avoid`; its box."""
    title = "Ratingen"
    title_width, cap, baseline = style.text_size(title)
    digit_width = style.text_size("0")[0]
    swatch = cap + baseline
    cell = swatch + style.pad + digit_width + 2 * style.pad
    width = 2 * style.pad + title_width + 2 * style.pad + 6 * cell
    height = 2 * style.pad + swatch
    margin = style.pad
    h, w = image.shape[:2]
    corners = [
        (margin, margin),
        (w - width - margin, margin),
        (margin, h - height - margin),
        (w - width - margin, h - height - margin),
    ]
    boxes = np.array([(x, y, x + width, y + height) for x, y in corners], np.float64)
    x, y = corners[int(np.argmin(_overlaps(boxes, np.array(avoid, np.float64))))]
    x, y = max(0, x), max(0, y)
    _shade(image, (x, y, x + width, y + height))
    _put_text(image, title, (x + style.pad, y + style.pad + cap), TEXT_COLOUR, style)
    left = x + 3 * style.pad + title_width
    for grade, colour in enumerate(SCORE_COLOURS):
        top = y + style.pad
        cv2.rectangle(image, (left, top), (left + swatch, top + swatch), colour, -1)
        _put_text(image, str(grade), (left + swatch + style.pad, top + cap), TEXT_COLOUR, style)
        left += cell
    return x, y, x + width, y + height


def _notice_band(width: int, style: _Style, models: Mapping[str, str]) -> np.ndarray:
    """The band below the film: the research-use notice, then the model versions, each shrunk to fit the width."""
    lines = [(RESEARCH_NOTICE, NOTICE_COLOUR), ("models: " + "  ".join(models[k] for k in sorted(models)), TEXT_COLOUR)]
    fitted = []
    for text, colour in lines:
        text_width = style.text_size(text)[0]
        room = width - 2 * style.pad
        font_scale = style.font_scale * min(1.0, room / max(text_width, 1))
        fitted.append((text, colour, max(font_scale, 0.3)))
    heights = [style.text_size(text, f)[1:] for text, _, f in fitted]
    band = np.zeros((sum(c + b + style.pad for c, b in heights) + style.pad, width, 3), np.uint8)
    y = style.pad
    for (text, colour, font_scale), (cap, baseline) in zip(fitted, heights, strict=True):
        _put_text(band, text, (style.pad, y + cap), colour, style, font_scale)
        y += cap + baseline + style.pad
    return band
