"""Reading images and label maps, with errors that name the file and the fix."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

__all__ = ["BadSampleError", "read_image", "read_record_pixels", "read_sem_seg"]


class BadSampleError(RuntimeError):
    """A dataset file cannot be used (unreadable image, label of the wrong size or with invalid values)."""


def read_image(path: str, fmt: str = "BGR", exif_transpose: bool = True) -> np.ndarray:
    """Decode an image file to uint8 [H, W, 3] in ``fmt`` ("BGR" or "RGB"), EXIF orientation applied unless
    ``exif_transpose`` is False (torchvision's ImageFolder loader, which the ImageNet papers evaluated with, ignores
    it)."""
    try:
        with Image.open(path) as img:
            img.load()
            img = (ImageOps.exif_transpose(img) if exif_transpose else img).convert("RGB")
            arr = np.asarray(img)
    except FileNotFoundError:
        raise BadSampleError(f"Image file '{path}' does not exist "
                             f"(listed by the dataset but missing on disk)") from None
    except Exception as e:  # PIL raises OSError / UnidentifiedImageError / SyntaxError on corrupt data
        raise BadSampleError(
            f"Cannot decode image file '{path}' ({type(e).__name__}: {e}). The file is corrupt or truncated: "
            f"re-extract it from the dataset archive or remove it from the dataset"
        ) from None
    return arr[:, :, ::-1].copy() if fmt == "BGR" else arr.copy()


def read_record_pixels(record: dict, fmt: str = "BGR", exif_transpose: bool = True) -> np.ndarray:
    """A record's image as uint8 [H, W, 3] in ``fmt``: its ``image`` array when it carries one (an already decoded
    image, uint8 [H, W, 3] in BGR order as cv2.imread gives, e.g. from :class:`dense.Predictor`), else its
    ``file_name`` decoded by :func:`read_image`."""
    image = record.get("image")
    if image is None:
        return read_image(record["file_name"], fmt, exif_transpose)
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        got = f"{type(image).__name__} {getattr(image, 'dtype', '')} {tuple(getattr(image, 'shape', ()))}"
        raise ValueError(f"An image array must be uint8 [H, W, 3] (BGR, as cv2.imread gives), got {got}")
    return np.ascontiguousarray(image[:, :, ::-1] if fmt == "RGB" else image)


def read_sem_seg(path: str, reduce_zero_label: bool = False, ignore_label: int = 255) -> np.ndarray:
    """Read a label PNG (grey or palette indices) as uint8 [H, W]. With ``reduce_zero_label``
    (ADE20K, as mmseg): 0 and ``ignore_label`` become ``ignore_label``, every other value v becomes v - 1."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "P", "I", "I;16"):
                raise BadSampleError(f"Label file '{path}' has mode {img.mode}; expected a single-channel PNG of "
                                     f"class indices (grey or palette)")
            label = np.asarray(img).astype(np.int64)
    except FileNotFoundError:
        raise BadSampleError(f"Label file '{path}' does not exist") from None
    except BadSampleError:
        raise
    except Exception as e:
        raise BadSampleError(f"Cannot decode label file '{path}' ({type(e).__name__}: {e})") from None
    if reduce_zero_label:
        label = np.where((label == 0) | (label == ignore_label), ignore_label, label - 1)
    return label.astype(np.uint8) if label.max(initial=0) < 256 else label
