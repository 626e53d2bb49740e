"""Allow-lists for names, versions and free text that later become paths or commands."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from orchestrator.errors import InvalidInput

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_VERSION = re.compile(r"(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){0,3}")
_BUILDING_NUMBER = re.compile(r"[0-9]{1,6}")
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SETTING_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


def name(value: str, *, field: str = "name") -> str:
    """An identifier that may later become a file or folder name.

    Raises:
        InvalidInput: empty, too long, or with characters outside ``A-Z a-z 0-9 . _ -``
            (so no path separators, no control characters, no ``..``).
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise InvalidInput(
            f"{value!r} is not allowed: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no spaces, slashes or '..')",
            field=field,
        )
    return value


def version(value: str, *, field: str = "version") -> tuple[int, ...]:
    """Parse a dotted numeric version ('2026.1', '1.4.2'); return its sort key.

    Raises:
        InvalidInput: not 1-4 dot-separated numbers without leading zeros.
    """
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        raise InvalidInput(
            f"{value!r} is not a version: use 1 to 4 dot-separated numbers, e.g. 2026.1",
            field=field,
        )
    return tuple(int(p) for p in value.split("."))


def bump(value: str) -> str:
    """The next version after ``value``: its last number plus one."""
    parts = list(version(value))
    parts[-1] += 1
    return ".".join(str(p) for p in parts)


def building_number(value: str, *, field: str = "building") -> str:
    if not isinstance(value, str) or not _BUILDING_NUMBER.fullmatch(value):
        raise InvalidInput(f"{value!r} is not a building number (1-6 digits)", field=field)
    return value


def username(value: str, *, field: str = "username") -> str:
    if not isinstance(value, str) or not _USERNAME.fullmatch(value):
        raise InvalidInput(
            f"{value!r} is not a username: lowercase letters, digits, '.', '_' or '-'",
            field=field,
        )
    return value


def sha256_hex(value: str, *, field: str = "sha256") -> str:
    value = value.lower().removeprefix("sha256:")
    if not _SHA256.fullmatch(value):
        raise InvalidInput("must be 64 hexadecimal digits (a SHA-256)", field=field)
    return value


def text(value: str, *, field: str, max_len: int = 2000, required: bool = False) -> str:
    """Free text (reasons, evidence, labels): printable, bounded, stripped.

    Raises:
        InvalidInput: control characters (other than newline and tab), too long, or
            empty when required.
    """
    if not isinstance(value, str):
        raise InvalidInput("must be text", field=field)
    value = value.strip()
    if required and not value:
        raise InvalidInput("is required", field=field)
    if len(value) > max_len:
        raise InvalidInput(f"is {len(value)} characters; at most {max_len}", field=field)
    for ch in value:
        if ch not in "\n\t" and unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise InvalidInput(f"contains a control character ({ord(ch):#x})", field=field)
    return value


def label(value: str, *, field: str, max_len: int = 120) -> str:
    """A one-line human label (model id, display name, OS version)."""
    value = text(value, field=field, max_len=max_len, required=True)
    if "\n" in value or "\t" in value or "/" in value or "\\" in value:
        raise InvalidInput("must be one line without slashes", field=field)
    return value


def settings(values: Mapping[str, str], *, field: str = "settings") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, val in values.items():
        if not _SETTING_KEY.fullmatch(key):
            raise InvalidInput(
                f"setting name {key!r} is not allowed (letters, digits, '_', '.', '-')",
                field=field,
            )
        out[key] = text(val, field=f"{field}.{key}", max_len=500)
    return out


def parse_key_values(items: list[str], *, field: str) -> dict[str, str]:
    """Parse ``KEY=VALUE`` strings (from the command line).

    Raises:
        InvalidInput: an item without '=' or a key given twice.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep:
            raise InvalidInput(f"{item!r} is not KEY=VALUE", field=field)
        key = key.strip()
        if key in out:
            raise InvalidInput(f"{key!r} is given twice", field=field)
        out[key] = val
    return out
