"""Content digests: what an approval is bound to.

A releasable thing's digest is the SHA-256 of a canonical JSON description of
its bits and declared content (artifact digest, OS, packages, settings,
supported models, base digest). Changing any of them changes the digest, and
the approval chain starts over. Sunset dates and notes are not content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def canonical_json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_digest(content: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(content)).hexdigest()
