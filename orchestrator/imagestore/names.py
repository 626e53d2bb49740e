"""Allow-lists for what becomes a path in the store: image names, chunk ids."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.imagestore.errors import UnsafeName

_IMAGE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,80}")


def image_name(value: str) -> str:
    """An image's name in the store, which becomes ``indexes/<name>.caibx``.

    Raises:
        UnsafeName: not 1-81 characters of ``a-z 0-9 . _ -`` starting with a
            letter or digit, or containing ``..`` (so no ``/``, NUL or traversal).
    """
    if not isinstance(value, str) or not _IMAGE_NAME.fullmatch(value) or ".." in value:
        raise UnsafeName(
            f"{value!r} is not an image name: use 1-81 of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit, without '..'"
        )
    return value


def plain_file(path: Path | str) -> Path:
    """A file path the store is given to read or write: no NUL, an ordinary path.

    Raises:
        UnsafeName: the path holds a NUL byte or is empty.
    """
    text = str(path)
    if not text or "\x00" in text:
        raise UnsafeName(f"{text!r} is not a usable file path")
    return Path(text)
