"""A fake of our persona checker (remote/persona_checks.py) for service tests: each
check passes unless named as failing; a persona may be made unable to sign in.
It records what it was asked, never touching a network."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.remote.persona_checks import (
    Check,
    CheckOutcome,
    Login,
    PersonaResult,
    Target,
)


@dataclass
class FakePersonaChecker:
    failing: Mapping[str, set[str]] = field(default_factory=dict)
    """persona → names of the checks that fail for it."""
    refused: set[str] = field(default_factory=set)
    """Personas whose password is refused."""
    calls: list[tuple[Target, Login, list[Check]]] = field(default_factory=list)

    def run(
        self,
        target: Target,
        login: Login,
        checks: Sequence[Check],
        on_outcome: Callable[[CheckOutcome], None] = lambda _o: None,
    ) -> PersonaResult:
        self.calls.append((target, login, list(checks)))
        if login.persona in self.refused:
            why = f"sign-in failed for {login.persona} test account {login.username}"
            outcomes = tuple(
                CheckOutcome(c.name, login.persona, False, "", None, "", why) for c in checks
            )
            for o in outcomes:
                on_outcome(o)
            return PersonaResult(login.persona, login.username, False, why, outcomes)
        out = []
        for c in checks:
            bad = c.name in self.failing.get(login.persona, set())
            o = CheckOutcome(
                c.name,
                login.persona,
                not bad,
                f"fake {c.kind}",
                1 if bad else 0,
                "denied" if bad else "fine",
                "exited 1, expected 0" if bad else "passed",
            )
            on_outcome(o)
            out.append(o)
        return PersonaResult(login.persona, login.username, True, "", tuple(out))
