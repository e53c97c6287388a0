"""Reading one image file as RGB, within bounds: :func:`read_image`.

Refused with a :class:`~dcsnas.errors.DataError` naming the file: what is not a regular file (a named pipe
called ``*.jpg`` would block every reader; the file is opened non-blocking and checked on its descriptor, so
it cannot be swapped in between), a file over :data:`MAX_IMAGE_BYTES`, an image whose header claims more than
:data:`MAX_IMAGE_PIXELS` (checked before its pixels are decoded: a decompression bomb), and what PIL cannot
decode. 16-bit grey images (PIL modes ``I;16*`` and ``I``) are scaled to 8 bits (PIL's own conversion clips
them, so they would read as white).
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from dcsnas.errors import DataError

MAX_IMAGE_BYTES = 64 * 2**20
MAX_IMAGE_PIXELS = 4096 * 4096


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "I" or img.mode.startswith("I;16"):
        grey = np.asarray(img, dtype=np.float64) * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def read_image(path: str | Path) -> Image.Image:
    """The image file ``path`` as an RGB PIL image (fully decoded, the file closed)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError(f"cannot read image '{path}': {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"cannot read image '{path}': not a regular file (a pipe, device or folder)")
        if info.st_size > MAX_IMAGE_BYTES:
            raise DataError(f"cannot read image '{path}': {info.st_size} bytes, more than the {MAX_IMAGE_BYTES} "
                            "allowed")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(fh) as img:
                    width, height = img.size
                    if width * height > MAX_IMAGE_PIXELS:
                        raise DataError(f"cannot read image '{path}': {width}x{height} pixels, more than the "
                                        f"{MAX_IMAGE_PIXELS} allowed (a decompression bomb?)")
                    return _to_rgb(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"cannot read image '{path}': {exc}") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image '{path}': {exc}") from None
