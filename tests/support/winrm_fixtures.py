"""Pytest fixtures for the WinRM protocol responder; import them where needed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from tests.support.winrm_responder import WinRMResponder

WINRM_USER = "orchestrator"
WINRM_PASSWORD = "Corr3ct-Horse!"


@pytest.fixture
def winrm_responder() -> Iterator[WinRMResponder]:
    """A fresh responder (one PC) for the test, user ``orchestrator``."""
    with WinRMResponder({WINRM_USER: WINRM_PASSWORD}) as responder:
        yield responder


@pytest.fixture
def make_winrm_responder() -> Iterator[Callable[..., WinRMResponder]]:
    """Start responders with faults configured (stopped after the test)."""
    with ExitStack() as stack:

        def make(**kwargs: Any) -> WinRMResponder:
            kwargs.setdefault("users", {WINRM_USER: WINRM_PASSWORD})
            return stack.enter_context(WinRMResponder(**kwargs))

        yield make
