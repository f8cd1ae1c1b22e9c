"""Thumbnails of the browser: block-mean downsampling, contrast stretch, JPEG data URIs."""

from __future__ import annotations

import base64
import io
import math
import os

import numpy as np

from topaz_lightning.errors import InputError

#: longest side of a thumbnail unless ``downsample_for_thumbnail`` is given
THUMBNAIL_MAX_SIDE_PX = 512
#: contrast stretch: these percentiles of the thumbnail map to black and white
STRETCH_PERCENTILES = (1.0, 99.0)
#: JPEG quality of the thumbnails: a 512 px EMPIAR-10017 thumbnail is ~92 KB in the page at 75,
#: ~115 KB at 85, ~185 KB at 95 (base64; docs/browser.md)
JPEG_QUALITY = 75


def thumbnail(
    image: np.ndarray, downsample: int | None = None, max_side_px: int = THUMBNAIL_MAX_SIDE_PX
) -> tuple[np.ndarray, int]:
    """A uint8 picture of ``image`` for display and its downsampling factor.

    Block means of ``downsample`` x ``downsample`` pixels (default: the smallest factor that
    brings the longer side to ``max_side_px`` or less; the last partial block is dropped), then a
    contrast stretch from the 1st to the 99th percentile. Thumbnail pixel ``i`` covers micrograph
    pixels ``[i f, (i + 1) f)``, so a micrograph coordinate ``x`` lies at ``(x + 0.5) / f`` in
    the thumbnail's continuous frame (0 at its left edge).
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or min(image.shape) < 1:
        raise InputError(f"expected a 2-D micrograph, got shape {image.shape}", where="image")
    if downsample is None:
        factor = max(1, math.ceil(max(image.shape) / max_side_px))
    else:
        factor = int(downsample)
        if factor < 1 or factor != downsample:
            raise InputError(
                f"must be an integer >= 1, got {downsample!r}", where="downsample_for_thumbnail"
            )
    h, w = image.shape[0] // factor, image.shape[1] // factor
    if h < 1 or w < 1:
        raise InputError(
            f"downsampling by {factor} leaves no pixel of a {image.shape} micrograph",
            where="downsample_for_thumbnail",
        )
    small = image[: h * factor, : w * factor].reshape(h, factor, w, factor).mean(axis=(1, 3))
    finite = small[np.isfinite(small)]
    if finite.size == 0:
        return np.zeros((h, w), dtype=np.uint8), factor
    lo, hi = np.percentile(finite, STRETCH_PERCENTILES)
    if not hi > lo:
        hi = lo + 1.0
    scaled = np.clip((np.nan_to_num(small, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8), factor


def _jpeg_data_uri(picture: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture, mode="L").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _load_image(name: str, source) -> np.ndarray:
    if isinstance(source, str | os.PathLike):
        from topaz_lightning.io.micrographs import read_micrograph

        return read_micrograph(source)
    image = np.asarray(source, dtype=np.float32)
    if image.ndim != 2:
        raise InputError(
            f"expected a 2-D array, got shape {image.shape}", where=f"micrograph {name}"
        )
    return image
