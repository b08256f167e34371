"""Image inputs of the command-line tools: files, globs and directories, checked up front."""

import glob
import os
from typing import Iterable, List, Sequence, Tuple

from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "InputError", "collect_images", "split_inputs_and_opts"]

# Extensions looked for inside directories (an explicitly named file may have any name).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class InputError(ValueError):
    """An input path that cannot be used; the message names it and says why."""


def _check_image(path: str) -> None:
    if not os.path.isfile(path):
        raise InputError(f"input {path!r}: no such file")
    try:
        with Image.open(path) as image:
            image.load()  # decode fully: a truncated file fails here, not mid-run
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"input {path!r} is not a readable image: {e}") from e


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
        InputError: naming the first input that is missing, not a readable image, a
            directory without images, a pattern without matches -- or two inputs that
            share a file name stem (their outputs would overwrite each other).
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


def split_inputs_and_opts(
    tokens: Iterable[str], config_keys: Iterable[str]
) -> Tuple[List[str], List[str]]:
    """Split ``--input A B KEY VALUE ...`` into input paths and config overrides.

    The overrides start at the first token that is not an existing path and whose part
    before the first dot is a top-level config key (``MODEL.WEIGHTS``, ``OUTPUT_DIR``).

    Args:
        tokens: what followed ``--input``.
        config_keys: the config's top-level keys.
    """
    tokens, keys = list(tokens), set(config_keys)
    for i, token in enumerate(tokens):
        if token.split(".", 1)[0] in keys and not os.path.exists(token):
            return tokens[:i], tokens[i:]
    return tokens, []
