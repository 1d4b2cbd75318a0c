"""The shapes world's detector: coloured shapes found by colour, then told apart by fitting templates.

It has to read what the diffusion model draws, not only the renderer's exact pixels: colours
off by some percent, a tinted background, soft edges and noise. So it works relative to the
image's own background, and it judges shape by comparing the blob with the three ideal shapes
instead of thresholding one statistic.

1. Background: median of the border pixels (the renderer keeps objects off the outermost row),
   refined on every pixel that looks like background.
2. Colour: each pixel's offset from the background is projected on the four background->palette
   directions. The nearest direction (smallest angle: a hue relative to the background, read on
   a lightly smoothed image so that noise cannot scatter one object over two colours) names the
   colour; the projection length is the pixel's coverage (0 background, 1 full colour), so an
   anti-aliased or blurred edge pixel counts as part coverage, not as a new colour.
3. Objects: 4-connected components of pixels covered at least half by one colour, keeping those
   whose total coverage (soft area) reaches a minimum that scales with the image area. A small
   piece touching a bigger piece of another colour (a generated red square's orange rim) is
   recoloured to the bigger one first: the renderer never lets two objects touch.
4. Shape: coverage moments are unchanged by blur and unbiased under noise, so area and centroid
   give each candidate shape's box (a triangle's centroid sits 2/3 down from its apex). Each
   candidate's ideal coverage, at a few blur widths, is compared with the blob; the best fit wins,
   and its margin over the runner-up is the score (0: a toss-up between two shapes, 1: certain).
5. Soft edges can bridge two objects of one colour into one blob. Eroding the blob until it falls
   apart gives one core per object; the split is kept when the parts fit far better than the whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from atelier.worlds.shapes.render import PALETTE
from atelier.worlds.shapes.scene import COLOURS, SHAPES
from atelier.tools.detection import Detection

NAMES = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
# Area of each shape relative to its (square) box, and where its centroid sits in the box, from the top.
_AREA_FRACTION = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}
_CENTROID_DEPTH = {"circle": 0.5, "square": 0.5, "triangle": 2 / 3}
_PALETTE = np.array([PALETTE[c] for c in COLOURS], np.float32) / 255
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class _Fit:
    """The best shape for one blob: squared error of its ideal coverage, box in window pixels, score."""

    error: float
    shape: str
    box: tuple[float, float, float, float]
    score: float

    def detection(self, colour: str, left: int, top: int) -> Detection:
        x0, y0, x1, y1 = self.box
        return Detection(f"{colour} {self.shape}", (left + x0, top + y0, left + x1, top + y1), self.score)


def _background(rgb: np.ndarray) -> np.ndarray:
    border = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]])
    first = np.median(border, axis=0)
    near = np.linalg.norm(rgb - first, axis=-1) < 0.25
    return np.median(rgb[near], axis=0) if near.sum() >= border.shape[0] else first


def _colour_coverage(
    rgb: np.ndarray, background: np.ndarray, hue_smoothing: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel and colour (H, W, 4): coverage, and the cosine between offset and colour direction."""
    directions = _PALETTE - background  # (4, 3)
    lengths = np.linalg.norm(directions, axis=1)
    offset = rgb - background  # (H, W, 3)
    coverage = (offset @ directions.T) / lengths**2
    # Hue is read from a lightly smoothed offset: noise would otherwise flip pixels of an
    # off-colour object (an orange-ish yellow) between two colours and break it into pieces.
    if hue_smoothing > 0:
        offset = ndimage.gaussian_filter(offset, sigma=(hue_smoothing, hue_smoothing, 0))
    cosine = (offset @ directions.T) / (lengths * (np.linalg.norm(offset, axis=-1, keepdims=True) + 1e-6))
    return coverage, cosine


def _ideal_coverage(shape: str, x0: float, y0: float, side: float, height: int, width: int) -> np.ndarray:
    """Anti-aliased coverage of one shape with square box (x0, y0, side) on a height x width grid."""
    offsets = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
    ys = (np.arange(height)[:, None] + offsets[None, :]).reshape(-1)[:, None]
    xs = (np.arange(width)[:, None] + offsets[None, :]).reshape(-1)[None, :]
    match shape:
        case "square":
            inside = (xs >= x0) & (xs <= x0 + side) & (ys >= y0) & (ys <= y0 + side)
        case "circle":
            r = side / 2
            inside = (xs - x0 - r) ** 2 + (ys - y0 - r) ** 2 <= r * r
        case "triangle":  # apex up, base at the bottom, as the renderer draws it
            half_width = (side / 2) * (ys - y0) / max(side, 1e-6)
            inside = (ys >= y0) & (ys <= y0 + side) & (np.abs(xs - x0 - side / 2) <= half_width)
        case _:
            raise ValueError(shape)
    return inside.reshape(height, _SUPERSAMPLE, width, _SUPERSAMPLE).mean(axis=(1, 3))


def _soften(coverage: np.ndarray, width: float) -> np.ndarray:
    return ndimage.gaussian_filter(coverage, width, mode="constant") if width > 0 else coverage


class ShapesDetector:
    """Finds red/green/blue/yellow circles, squares and triangles; meets the Detector protocol."""

    def __init__(
        self,
        min_coverage: float = 0.5,
        min_cosine: float = 0.7,
        min_area_at_32: float = 8.0,
        blur_widths_at_32: tuple[float, ...] = (0.0, 0.5, 0.9),
        split_gain: float = 0.5,
        hue_smoothing_at_32: float = 0.7,
        hue_tolerance: float = 0.1,
    ):
        self.min_coverage = min_coverage  # a pixel belongs to an object when at least half covered
        self.min_cosine = min_cosine  # and its colour is near one palette hue
        self.min_area_at_32 = min_area_at_32  # soft area in pixels at 32x32, scaled with image area
        self.blur_widths_at_32 = blur_widths_at_32  # how soft the edges may be, in pixels at 32x32
        self.hue_smoothing_at_32 = hue_smoothing_at_32  # Gaussian std, pixels at 32x32, for reading hue
        self.hue_tolerance = hue_tolerance  # cosine margin a touching piece overrules per unit of size ratio
        self.split_gain = split_gain  # a blob is two objects when the parts' error is below this share

    def detect(self, images: list[Image.Image], names: list[list[str]]) -> list[list[Detection]]:
        if len(images) != len(names):
            raise ValueError(f"{len(images)} images but {len(names)} name lists")
        out = []
        for image, wanted in zip(images, names):
            keep = set(wanted)
            out.append([d for d in self.detect_all(image) if d.label in keep])
        return out

    def detect_all(self, image: Image.Image) -> list[Detection]:
        """Every object in the image, labelled with one of the 12 colour-shape names."""
        rgb = np.asarray(image.convert("RGB"), np.float32) / 255
        height, width = rgb.shape[:2]
        scale = math.sqrt(height * width) / 32
        coverage, cosine = _colour_coverage(rgb, _background(rgb), self.hue_smoothing_at_32 * scale)
        nearest = cosine.argmax(-1)
        strongest = np.take_along_axis(coverage, nearest[..., None], -1)[..., 0]
        foreground = (strongest >= self.min_coverage) & (cosine.max(-1) >= self.min_cosine)
        nearest = _absorb_fragments(foreground, nearest, cosine, self.hue_tolerance)
        pad = math.ceil(2 * scale)
        found = []
        for ci, colour in enumerate(COLOURS):
            labels, _ = ndimage.label(foreground & (nearest == ci), structure=_FOUR_CONNECTED)
            for k, window in enumerate(ndimage.find_objects(labels), start=1):
                top, bottom = max(window[0].start - pad, 0), min(window[0].stop + pad, height)
                left, right = max(window[1].start - pad, 0), min(window[1].stop + pad, width)
                blob = labels[top:bottom, left:right] == k
                others = foreground[top:bottom, left:right] & ~blob
                weight = coverage[top:bottom, left:right, ci]
                whole = self._fit(weight, blob, others, pad, scale)
                if whole is None:
                    continue
                fits = [whole]
                # Soft edges can bridge two same-coloured objects: split when the parts fit better.
                parts = [
                    self._fit(weight, part, others | (blob & ~part), pad, scale)
                    for part in _split(blob, max_erosions=math.ceil(3 * scale))
                ]
                parts = [p for p in parts if p is not None]
                if len(parts) >= 2 and sum(p.error for p in parts) < self.split_gain * whole.error:
                    fits = parts
                found += [f.detection(colour, left, top) for f in fits]
        return sorted(found, key=lambda d: (d.label, d.box))

    def _fit(self, weight: np.ndarray, blob: np.ndarray, others: np.ndarray, pad: int, scale: float) -> _Fit | None:
        """The shape that best explains the coverage around `blob`, or None when it is too small."""
        # The blob and its soft rim, minus pixels that belong to any other object.
        region = ndimage.binary_dilation(blob, iterations=pad) & ~others
        weight = weight * region
        area = float(weight.sum())
        if area < self.min_area_at_32 * scale**2:
            return None
        ys, xs = np.indices(weight.shape, dtype=np.float32) + 0.5
        cx, cy = float((weight * xs).sum() / area), float((weight * ys).sum() / area)
        fits = []
        for shape in SHAPES:
            side = math.sqrt(area / _AREA_FRACTION[shape])
            x0, y0 = cx - side / 2, cy - _CENTROID_DEPTH[shape] * side
            ideal = _ideal_coverage(shape, x0, y0, side, *weight.shape)
            error = min(
                float(((_soften(ideal, width * scale) - weight) ** 2)[region].sum()) for width in self.blur_widths_at_32
            )
            fits.append(_Fit(error, shape, (x0, y0, x0 + side, y0 + side), 0.0))
        fits.sort(key=lambda f: f.error)
        best, runner_up = fits[0], fits[1]
        score = 1.0 - best.error / runner_up.error if runner_up.error > 0 else 1.0
        return _Fit(best.error, best.shape, best.box, float(np.clip(score, 0.0, 1.0)))


def _absorb_fragments(foreground: np.ndarray, nearest: np.ndarray, cosine: np.ndarray, tolerance: float) -> np.ndarray:
    """Recolour each one-colour piece that touches a bigger piece of another colour whose hue is
    nearly as near to the piece's own: within `tolerance` (in cosine) per unit of size ratio.

    A generated object's colour drifts (a red square with an orange rim, a yellow one with a
    greenish patch); read per pixel, it falls into pieces of neighbouring hues. Such pieces are one
    object of the big piece's colour. Two objects of clearly different colours that happen to
    touch stay two, unless one is a speck next to the other.
    """
    pieces = np.zeros(nearest.shape, np.int32)
    colour_of, size_of = [0], [0.0]
    for ci in range(len(COLOURS)):
        labels, n = ndimage.label(foreground & (nearest == ci), structure=_FOUR_CONNECTED)
        pieces[labels > 0] = labels[labels > 0] + len(colour_of) - 1
        colour_of += [ci] * n
        size_of += [float(v) for v in ndimage.sum_labels(labels > 0, labels, index=np.arange(1, n + 1))]
    if len(colour_of) <= 2:
        return nearest
    nearest = nearest.copy()
    eight = np.ones((3, 3), bool)
    for piece in np.argsort(size_of[1:]) + 1:  # smallest first, so a chain of fragments settles
        mask = pieces == piece
        touching = np.unique(pieces[ndimage.binary_dilation(mask, structure=eight) & ~mask])
        touching = [t for t in touching if t and colour_of[t] != colour_of[piece] and size_of[t] >= size_of[piece]]
        if not touching:
            continue
        host = max(touching, key=lambda t: size_of[t])
        hue = cosine[mask].mean(0)  # how near the piece is to each colour, on average
        if hue[colour_of[piece]] - hue[colour_of[host]] < tolerance * size_of[host] / size_of[piece]:
            nearest[mask] = colour_of[host]
            pieces[mask], colour_of[piece] = host, colour_of[host]
            size_of[host] += size_of[piece]
    return nearest


def _split(blob: np.ndarray, max_erosions: int) -> list[np.ndarray]:
    """Parts of a blob that erosion separates (each blob pixel goes to its nearest core), or []."""
    core = blob
    for _ in range(max_erosions):
        core = ndimage.binary_erosion(core, structure=_FOUR_CONNECTED)
        labels, n = ndimage.label(core, structure=_FOUR_CONNECTED)
        if n == 0:
            return []
        sizes = ndimage.sum_labels(core, labels, index=np.arange(1, n + 1))
        # Noise leaves specks as the core shrinks; only sizeable cores are objects.
        cores = [i + 1 for i, size in enumerate(sizes) if size >= max(2.0, 0.15 * sizes.max())]
        if len(cores) >= 2:
            seeds = np.isin(labels, cores)
            _, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)
            owner = labels[iy, ix]
            return [blob & (owner == c) for c in cores]
    return []


_DEFAULT = ShapesDetector()


def detect_all(image: Image.Image) -> list[Detection]:
    """Every object the default detector finds; used to relabel an image by what was drawn."""
    return _DEFAULT.detect_all(image)
