"""Square crops around the tracked person: steady boxes, cropping, pasting back, intrinsics.

Pixel convention (docs/subject_format.md): (0, 0) is the top-left corner of the top-left pixel,
pixel centres sit at +0.5. A crop box ``(x0, y0, x1, y1)`` in source pixels maps a source point
``(u, v)`` to ``((u - x0) * s, (v - y0) * s)`` in the R x R crop, ``s = R / (x1 - x0)``. Boxes
here are square with integer corners, so cropping is an exact area resize of whole pixels, and
may extend past the source image: that part of the crop is black.
"""

from __future__ import annotations

import cv2
import numpy as np

# Focal length guess for an unknown camera, in units of the longer image side: about 45 degrees
# across the longer side (51 diagonally for 16:9), typical of phone main cameras. Body fitting
# refines it.
FOCAL_GUESS = 1.2


def source_intrinsics(source_size: tuple[int, int]) -> np.ndarray:
    """Guessed pinhole K (3, 3) of the source camera: f = 1.2 * max(H0, W0), centred."""
    height, width = source_size
    focal = FOCAL_GUESS * max(height, width)
    return np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float64)


def crop_intrinsics(K0: np.ndarray, boxes: np.ndarray, resolution: int) -> np.ndarray:
    """K (N, 3, 3) of each crop, from source intrinsics K0 (3, 3) and square boxes (N, 4)."""
    scale = resolution / (boxes[:, 2] - boxes[:, 0])
    to_crop = np.zeros((len(boxes), 3, 3))
    to_crop[:, 0, 0] = to_crop[:, 1, 1] = scale
    to_crop[:, 0, 2] = -scale * boxes[:, 0]
    to_crop[:, 1, 2] = -scale * boxes[:, 1]
    to_crop[:, 2, 2] = 1
    return to_crop @ K0


def crop_points(points: np.ndarray, boxes: np.ndarray, resolution: int) -> np.ndarray:
    """Keypoints (N, K, 3) ``[x, y, conf]`` from source to crop pixels (boxes (N, 4)).

    Undetected points (conf 0) stay (0, 0, 0).
    """
    scale = resolution / (boxes[:, 2] - boxes[:, 0])
    out = points.copy()
    out[..., :2] = (points[..., :2] - boxes[:, None, :2]) * scale[:, None, None]
    out[..., :2] *= points[..., 2:] > 0
    return out


def _moving(values: np.ndarray, window: int, reduce) -> np.ndarray:
    """``reduce`` over a centred window along axis 0 of (N, C) values, edges repeated."""
    half = window // 2
    padded = np.pad(values, ((half, half), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)
    return reduce(windows, axis=-1)


def smooth_boxes(boxes: np.ndarray, window: int = 9, margin: float = 0.1, size_quantile: float = 0.95) -> np.ndarray:
    """Steady square crop boxes (N, 4) from per-frame person boxes (N, 4), NaN where none.

    The centre follows the person through a moving median (robust to single-frame glitches)
    and then a moving mean (removes jitter) over ``window`` frames, with missing frames
    interpolated. The size is one value for the whole clip, the ``size_quantile`` of the
    per-frame box sizes plus ``margin`` of it on each side, so the avatar sees a steady scale
    and the person rarely leaves the crop. Corners are rounded to whole pixels.
    """
    found = ~np.isnan(boxes).any(axis=1)
    if not found.any():
        raise ValueError("smooth_boxes needs at least one frame with a box")
    frames = np.arange(len(boxes))
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    centre = np.stack([np.interp(frames, frames[found], c[found]) for c in centre.T], axis=1)
    window = max(1, min(window, len(boxes)) | 1)  # odd, so the window is centred
    centre = _moving(_moving(centre, window, np.median), window, np.mean)
    sizes = (boxes[found, 2:] - boxes[found, :2]).max(axis=1)
    side = np.ceil(np.quantile(sizes, size_quantile) * (1 + 2 * margin))
    x0y0 = np.round(centre - side / 2)
    return np.concatenate([x0y0, x0y0 + side], axis=1)


def _interpolation(side: float, resolution: int) -> int:
    # Area averaging when shrinking (no aliasing of the full-resolution frame), bilinear when
    # enlarging; both map pixel areas with the corner convention.
    return cv2.INTER_AREA if side > resolution else cv2.INTER_LINEAR


def crop_image(image: np.ndarray, box: np.ndarray, resolution: int) -> np.ndarray:
    """The square ``box`` (integer corners) of ``image`` (H, W[, C]) resized to R x R.

    Parts of the box outside the image are black (zero).
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = image.shape[:2]
    top, left = min(max(y0, 0), height), min(max(x0, 0), width)
    inside = image[top : max(min(y1, height), top), left : max(min(x1, width), left)]
    if inside.shape[:2] != (y1 - y0, x1 - x0):
        region = np.zeros((y1 - y0, x1 - x0, *image.shape[2:]), image.dtype)
        top, left = top - y0, left - x0
        region[top : top + inside.shape[0], left : left + inside.shape[1]] = inside
        inside = region
    size = (resolution, resolution)
    return cv2.resize(inside, size, interpolation=_interpolation(x1 - x0, resolution))


def paste_back(crop: np.ndarray, box: np.ndarray, source_size: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`crop_image`: the crop (R, R[, C]) resized into its box of a black
    (H0, W0[, C]) image; the parts of the box outside the source image are dropped."""
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = source_size
    out = np.zeros((height, width, *crop.shape[2:]), crop.dtype)
    left, top, right, bottom = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if left >= right or top >= bottom:
        return out
    method = _interpolation(crop.shape[0], x1 - x0)
    region = cv2.resize(crop, (x1 - x0, y1 - y0), interpolation=method)
    out[top:bottom, left:right] = region[top - y0 : bottom - y0, left - x0 : right - x0]
    return out


def warp_to_crop(
    image: np.ndarray, origin: tuple[float, float], scale: float, box: np.ndarray, resolution: int
) -> np.ndarray:
    """Resample a low-resolution image (h, w) into a crop, bilinearly (for smooth masks).

    ``image`` covers source pixels ``[ox, ox + w / scale] x [oy, oy + h / scale]``: it is a
    region of the source at ``scale`` image pixels per source pixel, whose top-left corner is
    at source position ``origin = (ox, oy)``. Outside it the crop is zero.
    """
    s = resolution / (box[2] - box[0])
    # Crop pixel index j (centre j + 0.5) <- image index ((j + 0.5) / s + x0 - ox) * scale - 0.5.
    a = scale / s
    matrix = np.array(
        [[a, 0, (0.5 / s + box[0] - origin[0]) * scale - 0.5], [0, a, (0.5 / s + box[1] - origin[1]) * scale - 0.5]]
    )
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(image, matrix, (resolution, resolution), flags=flags, borderValue=0)
