"""Start pictures and goal images as users give them: arrays, stacks, PIL images; clear errors.

A reset's ``image`` (one frame) or ``frames`` (the last k), and a goal image of a reward hook,
may be uint8 arrays of any size, tensors, or PIL images; anything else is refused with what
it looks like and how to convert it (:func:`picture_hint`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

#: One row's start picture in reset options: ``image`` one frame, ``frames`` the last k.
PICTURE_SHAPES = {"image": "(H, W, 3)", "frames": "(k, H, W, 3)"}


def one_picture(key: str, value: Any) -> np.ndarray:
    """``options[key]`` of one row (a single env's) as an array.

    A ``ValueError`` names the shape it was given, not one with the vector env's batch axis.
    """
    arr, want = picture_array(key, value), PICTURE_SHAPES[key]
    if arr.ndim != want.count(",") + 1 or arr.shape[-1] != 3:
        stack = key == "image" and arr.ndim == 4 and arr.shape[-1] == 3
        hint = " (a stack of frames: pass it as 'frames')" if stack else picture_hint(arr)
        raise ValueError(f"reset {key} must be {want} RGB, got shape {arr.shape}{hint}")
    if min(arr.shape[:-1]) < 1:  # no frames in the stack, or no pixels
        raise ValueError(f"reset {key} is empty: shape {arr.shape}")
    return arr


def picture_array(key: str, value: Any) -> np.ndarray:
    """A start picture (or a stack, or a list of them) as an array; PIL images as RGB.

    A PIL image of 8 bits a channel (grey, palette, RGB, RGBA, CMYK) is converted to RGB, as
    ``rollout --image`` reads files; an array is taken as it is (:func:`picture_hint` says how
    to fix one that is not uint8 RGB). A list of pictures of different sizes is a
    ``ValueError``.
    """
    value = pil_as_rgb(f"reset {key}", value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise ValueError(
            f"reset {key} must be a picture (a uint8 array or a PIL image), got {len(value)} "
            "bytes: to start from an encoded image, pass PIL.Image.open(io.BytesIO(data))"
        )
    if value is None or isinstance(value, (str, os.PathLike)):
        raise ValueError(
            f"reset {key} must be a picture (a uint8 array or a PIL image), got "
            f"{type(value).__name__} {value!r}: to start from a file, pass PIL.Image.open(path)"
        )
    try:
        return np.asarray(value)
    except ValueError:  # NumPy's "inhomogeneous shape"
        shapes = [np.shape(v) for v in value]
        raise ValueError(
            f"reset {key} must be one array, its pictures of one size, got shapes {shapes}"
        ) from None


def pil_as_rgb(name: str, value: Any) -> Any:
    """``value`` with PIL images (it, or those in a list) as RGB arrays; else as it is.

    Images of more than 8 bits a channel (modes ``I``, ``I;16``, ``F``) are refused: PIL's
    conversion clips them instead of scaling. A photo's EXIF orientation is applied, so the
    picture is upright as a viewer shows it (a phone stores its portrait shots turned).
    """
    pil = sys.modules.get("PIL.Image")  # only if the caller has Pillow loaded
    if pil is None:
        return value
    from PIL import ImageOps

    def rgb(image: Any) -> np.ndarray:
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):
            raise ValueError(
                f"{name}: a PIL image of mode {image.mode!r} (more than 8 bits) would be "
                "clipped, not scaled: scale it to uint8 first, e.g. (np.asarray(img) / "
                "max_value * 255).round().astype(np.uint8)"
            )
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))

    if isinstance(value, pil.Image):
        return rgb(value)
    if isinstance(value, (list, tuple)):
        return [rgb(v) if isinstance(v, pil.Image) else v for v in value]
    return value


def picture_hint(arr: np.ndarray) -> str:
    """How to make ``arr`` uint8 RGB, appended to the errors that refuse it ('' if no guess)."""
    shape = arr.shape
    if arr.size == 0:
        return " (it holds no pixels)"
    numeric, floats = arr.dtype.kind in "fiu" and arr.dtype != np.uint8, arr.dtype.kind == "f"
    finite = arr[np.isfinite(arr)] if floats else arr
    if floats and not finite.size:
        return " (every value is NaN or inf: there is no picture to convert)"
    low, top = (float(finite.min()), float(finite.max())) if numeric and finite.size else (0, 0)
    # A [0, 1] picture a resize undershot a little is not a [-1, 1] one
    undershot = floats and -0.05 <= low < 0 and top <= 1
    if numeric and low < 0 and not undershot:  # a cast would wrap them
        fix = (
            "floats in [-1, 1]: ((x + 1) * 127.5).round().clip(0, 255).astype(np.uint8)"
            if floats and low >= -1 and top <= 1
            else f"values from {low:g} to {top:g}: scale them into 0-255 first"
        )
    elif numeric and top > 255:  # 16-bit frames: a cast keeps the low byte, noise
        fix = (
            "16 bits a channel: (x >> 8).astype(np.uint8)"
            if arr.dtype == np.uint16
            else f"values up to {top:g}: (x / x.max() * 255).round().astype(np.uint8)"
        )
    elif floats:
        fix = (
            "floats in 0-255: x.round().clip(0, 255).astype(np.uint8)"
            if top > 1
            else "floats in [0, 1]: (x * 255).round().clip(0, 255).astype(np.uint8)"
        )
    elif numeric:
        fix = "integers in 0-255: x.astype(np.uint8)"
    elif len(shape) >= 3 and shape[-1] == 4:
        fix = "RGBA: drop the alpha channel, x[..., :3]"
    elif len(shape) >= 3 and shape[-1] == 1:
        fix = "grey with a channel axis: np.repeat(x, 3, axis=-1)"
    elif len(shape) >= 3 and shape[-3] == 3:
        fix = "channels first: np.moveaxis(x, -3, -1); grey frames: np.repeat(x[..., None], 3, -1)"
    elif len(shape) == 2:
        fix = "grey: np.repeat(x[..., None], 3, axis=-1)"
    else:
        return ""
    return f" ({fix}; a PIL image of 8 bits a channel is converted to RGB)"
