"""Reading images and turning numpy images into network tensors, with clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import BadInputError, MissingFileError

#: file suffixes of the still images the project reads from a folder (OpenCV decodes them all)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff")


def read_image(path: str | Path, grey: bool = True) -> np.ndarray:
    """Read ``path`` as ``H x W`` uint8 grey (or ``H x W x 3`` RGB); raise one clear error."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise BadInputError(f"cannot decode image (corrupt or not an image): {path}")
    if truncated_jpeg(path):
        raise BadInputError(f"JPEG file is truncated (cut short, e.g. an interrupted copy): {path}")
    return img if grey else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def truncated_jpeg(path: str | Path) -> bool:
    """True for a JPEG whose data stops before its end-of-image marker.

    OpenCV decodes such a file without an error (the missing rows come out grey), so it would be
    used silently. Fast path: the file ends with the ``FF D9`` marker (trailing padding allowed).
    Otherwise (data appended after the image, or a cut) Pillow decodes it to tell which.
    """
    with open(path, "rb") as fh:
        if fh.read(2) != b"\xff\xd8":  # not a JPEG
            return False
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 64))
        if fh.read().rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9"):
            return False
    from PIL import Image  # matplotlib's dependency; only for the rare JPEG without a final marker

    try:
        with Image.open(path) as im:
            im.load()
    except OSError:
        return True
    return False


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate a numpy image and return it as uint8 ``H x W`` or ``H x W x 3``."""
    if not isinstance(image, np.ndarray):
        raise BadInputError(f"expected a numpy image, got {type(image).__name__}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise BadInputError(f"image must be HxW or HxWx3, got shape {image.shape}")
    if min(image.shape[:2]) < 8:
        raise BadInputError(f"image is too small: {image.shape[:2]}")
    if image.dtype != np.uint8:
        if not np.isfinite(image).all():
            raise BadInputError("image contains NaN or infinite values")
        scale = 255.0 if image.dtype.kind == "f" and image.max() <= 1.0 else 1.0
        image = np.clip(image * scale, 0, 255).astype(np.uint8)
    return image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image


def to_grey(image: np.ndarray) -> np.ndarray:
    """Return an ``H x W`` uint8 grey version of a checked image (RGB input assumed)."""
    image = check_image(image)
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as cv2.COLOR_RGB2GRAY


def rgb_to_grey(images: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` RGB tensor -> ``[..., 1, H, W]`` float grey (same weights as OpenCV)."""
    w = torch.tensor(GREY_WEIGHTS, device=images.device, dtype=torch.float32).view(3, 1, 1)
    return (images.float() * w).sum(-3, keepdim=True)


def to_tensor(images: np.ndarray | list[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """Stack same-size grey images into ``[B, 1, H, W]`` float32 in ``[0, 1]`` on ``device``."""
    if isinstance(images, np.ndarray):
        images = [images]
    grey = [to_grey(im) for im in images]
    if len({g.shape for g in grey}) != 1:
        raise BadInputError(f"images in a batch must share a size, got {sorted({g.shape for g in grey})}")
    arr = torch.from_numpy(np.stack(grey))[:, None]
    return arr.to(device=device, dtype=torch.float32, non_blocking=True) / 255.0
