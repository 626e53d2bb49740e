"""References: how people name one version of one catalog entry.

* base image: ``pc-high@2026.1`` (platform-level@version)
* customized image: ``101/lab@1.2`` (building/name@version)
* software package: ``firefox@128.0`` district-wide, ``101/mathlab@3.1`` building-local
* any of them: ``#17`` (the catalog id)
"""

from __future__ import annotations

import re

from orchestrator.db.models import Releasable

DISTRICT_SCOPE = "*"
"""The scope key of district-wide entries (a building number otherwise)."""

REF_PATTERN = re.compile(r"(?:(?P<scope>[0-9]{1,6})/)?(?P<name>[^@/]+)@(?P<version>[^@/]+)")


def make_ref(name: str, version: str, scope_key: str) -> str:
    prefix = "" if scope_key == DISTRICT_SCOPE else f"{scope_key}/"
    return f"{prefix}{name}@{version}"


def ref_of(row: Releasable) -> str:
    return make_ref(row.name, row.version, row.scope_key)


def building_of(row: Releasable) -> str | None:
    return None if row.scope_key == DISTRICT_SCOPE else row.scope_key
