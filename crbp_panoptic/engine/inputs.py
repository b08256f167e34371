"""Image inputs of the command-line tools: files, globs and directories, checked up front,
and read the same way everywhere (:func:`read_rgb`)."""

import glob
import os
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "InputError",
    "collect_images",
    "config_keys",
    "read_rgb",
    "split_inputs_and_opts",
]

# Extensions looked for inside directories (an explicitly named file may have any name).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# PIL modes of 8 bits per channel, which PIL converts to RGB as they are. PIL also reads
# 16-bit RGB(A) and gray + alpha files into these modes, keeping each value's high byte.
_EIGHT_BIT_MODES = ("1", "L", "P", "LA", "La", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
# PIL modes of one 16-bit channel (16-bit grayscale PNG and TIFF).
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_READABLE = "8-bit images, 16-bit grayscale, 32-bit integers within 0..65535, floats within 0..1"


class InputError(ValueError):
    """An input path that cannot be used; the message names it and says why."""


def _high_depth_to_8bit(image: Image.Image, path: str) -> Image.Image:
    """A 16-bit, 32-bit integer or float image as 8-bit grayscale ("L"), scaled, not clipped.

    16-bit values v become round(v * 255 / 65535). Mode "I" (32-bit integers) is read as
    16-bit when its values fit 0..65535 (PIL gives some 16-bit files this mode); mode "F"
    (32-bit floats) when they lie in [0, 1] (scaled by 255). Other values have no fixed
    range to scale by and are refused.
    """
    values = np.asarray(image)
    if image.mode == "F":
        if values.size and not (
            np.isfinite(values).all() and 0 <= values.min() <= values.max() <= 1
        ):
            raise InputError(
                f"input {path!r}: float image (PIL mode 'F') with values from "
                f"{np.nanmin(values):g} to {np.nanmax(values):g}; float images are read as 0..1 "
                f"(readable: {_READABLE})"
            )
        scaled = np.rint(values.astype(np.float64) * 255)
    else:
        if image.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise InputError(
                f"input {path!r}: 32-bit integer image (PIL mode 'I') with values from "
                f"{values.min()} to {values.max()}, beyond 16 bits (readable: {_READABLE})"
            )
        scaled = (values.astype(np.uint32) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image, path: str) -> Image.Image:
    """``image`` as 8-bit RGB, high bit depths scaled; InputError for a mode it cannot read."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        image = _high_depth_to_8bit(image, path)
    elif image.mode not in _EIGHT_BIT_MODES:
        raise InputError(f"input {path!r}: PIL mode {image.mode!r} is not read ({_READABLE})")
    return image if image.mode == "RGB" else image.convert("RGB")


def _check_image(path: str) -> None:
    if not os.path.isfile(path):
        raise InputError(f"input {path!r}: no such file")
    try:
        with Image.open(path) as image:
            image.load()  # decode fully: a truncated file fails here, not mid-run
            _to_rgb(image, path)  # a mode or value range that cannot be read fails here too
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"input {path!r} is not a readable image: {e}") from e


def _test_size(height: int, width: int, min_size: int, max_size: int) -> Tuple[int, int]:
    """(height, width) after Detectron2's test-time ``ResizeShortestEdge``."""
    from detectron2.data.transforms import ResizeShortestEdge

    return ResizeShortestEdge.get_output_shape(height, width, min_size, max_size)


def read_rgb(
    path: str, test_size: Optional[Tuple[int, int]] = None
) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Read an image as (H, W, 3) uint8 RGB, the way every tool reads its inputs.

    The EXIF orientation is applied (as Detectron2's ``read_image`` does); 16-bit and
    other high-bit-depth images are scaled to 8 bits (see :func:`collect_images`).

    Args:
        path: a file checked by :func:`collect_images`.
        test_size: ``(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)``. An image larger than
            the model's test-time resize (short side ``MIN_SIZE_TEST``, long side at most
            ``MAX_SIZE_TEST``) is shrunk to that size as it is read -- the model sees no
            more -- so a large photo never exists at full size beyond its decoding (a
            JPEG is even decoded at a reduced scale). Smaller images keep their size.

    Returns:
        (np.ndarray, (int, int)): the image, and the file's own (height, width).
    """
    with Image.open(path) as image:
        orientation = image.getexif().get(0x0112, 1)
        width, height = image.size
        if orientation in (5, 6, 7, 8):  # rotated by 90 degrees
            width, height = height, width
        target = _test_size(height, width, *test_size) if test_size else (height, width)
        shrink = target[0] * target[1] < height * width
        if shrink:
            side = max(target)
            image.draft(None, (side, side))  # JPEG: decode at 1/2, 1/4 or 1/8 if that suffices
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        image = _to_rgb(image, path)
        if shrink:
            image = image.resize((target[1], target[0]), Image.Resampling.BILINEAR)
        return np.asarray(image), (height, width)


def _expand(pattern: str) -> List[str]:
    if os.path.isdir(pattern):
        found = sorted(
            os.path.join(pattern, f)
            for f in os.listdir(pattern)
            if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(pattern, f))
        )
        if not found:
            raise InputError(
                f"input directory {pattern!r} has no images "
                f"(looked for {', '.join(IMAGE_EXTENSIONS)})"
            )
        return found
    if glob.has_magic(pattern) and not os.path.exists(pattern):
        found = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        if not found:
            raise InputError(f"input pattern {pattern!r} matches no files")
        return found
    return [pattern]


def collect_images(inputs: Sequence[str]) -> List[str]:
    """Expand and check every input before anything is processed.

    Args:
        inputs: image files, glob patterns (``"dir/*.jpg"``) or directories (their
            images with an extension in :data:`IMAGE_EXTENSIONS`, not recursive).

    Returns:
        list[str]: image paths, in input order (sorted within a directory or glob),
        without repeats.

    Raises:
        InputError: naming the first input that is missing, not a readable image (a
            16-bit grayscale image is read, scaled to 8 bits; a float or 32-bit integer
            image only when its values fit 0..1 or 0..65535), a directory without images,
            a pattern without matches -- or two inputs that share a file name stem (their
            outputs would overwrite each other).
    """
    if not inputs:
        raise InputError("no input given")
    paths, seen = [], set()
    for pattern in inputs:
        for path in _expand(pattern):
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                paths.append(path)
    stems = {}
    for path in paths:
        _check_image(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems:
            raise InputError(
                f"inputs {stems[stem]!r} and {path!r} share the name {stem!r}, so their "
                "outputs would overwrite each other; rename one"
            )
        stems[stem] = path
    return paths


def config_keys(cfg) -> List[str]:
    """Every full key of a config that an override can set (``MODEL.CRBP.STEPS``, ...)."""
    keys = []
    for key, value in cfg.items():
        if isinstance(value, dict):
            keys += [f"{key}.{sub}" for sub in config_keys(value)]
        else:
            keys.append(key)
    return keys


def split_inputs_and_opts(
    tokens: Iterable[str], config_keys: Iterable[str]
) -> Tuple[List[str], List[str]]:
    """Split ``--input A B KEY VALUE ...`` into input paths and config overrides.

    The overrides are the longest tail of KEY VALUE pairs in which every KEY is a full
    config key (``MODEL.WEIGHTS``, ``MODEL.CRBP.STEPS``; see :func:`config_keys`) and the
    first KEY is not an existing path. Everything before it is an input, however it
    looks: ``TEST.jpg`` or ``"MODEL.*"`` are inputs, not keys.

    Args:
        tokens: what followed ``--input``.
        config_keys: the config's full keys.
    """
    tokens, keys = list(tokens), set(config_keys)
    start = len(tokens)
    # Walk back over KEY VALUE pairs; the overrides begin at the earliest valid pair.
    for i in range(len(tokens) - 2, -1, -2):
        if tokens[i] not in keys:
            break
        if not os.path.exists(tokens[i]):
            start = i
    return tokens[:start], tokens[start:]
