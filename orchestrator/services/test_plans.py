"""Each image's test plan: the checks a test run makes as the student and staff personas.

A **check** has a name (a slug, unique within the plan), the persona(s) it
runs as (``student``, ``staff`` or ``both``), a kind with its parameters, an
expectation and a timeout (seconds, 1 to 600, 30 unless given). The kinds:

============  ===========================================  ====================
kind          what it checks                               parameters
============  ===========================================  ====================
sign_in       the persona can sign in                      none
home_folder   the persona's home folder exists after it    none
app_present   an application path exists (and starts)      path, command? (kept as start),
                                                           expect_exit?
app_absent    a path is absent or not executable for it    path
reachable     host:port answers (printer, file share)      host, port
command       a shell command as the persona               command, expect_exit?, expect_output?
not_admin     the persona cannot use admin tools           command? (``sudo -n true`` on Macs,
                                                           ``net session`` on PCs): it must fail
============  ===========================================  ====================

Paths are absolute for the image's platform (``/Applications/...`` on a Mac,
``C:\\...`` on a PC).

**Inheritance.** A base image's plan applies to every customized image built
from it. A customized image's plan is the base's checks (minus those it
disabled), then its own. It may add checks and may disable an inherited one
by name, with a reason (kept, shown and audited); it may not redefine an
inherited check under the same name. :func:`effective_plan` gives that list,
each check marked with where it came from; :func:`plan_digest` is a SHA-256
over its canonical JSON, which test evidence will be bound to with the
image's own digest.

**Who may edit.** A base image's plan: IT and EdTech
(:data:`Action.EDIT_BASE_TEST_PLAN`). A customized image's own checks: its
building's tech (SecTec or BTC of that building) and EdTech
(:data:`Action.EDIT_CUSTOM_TEST_PLAN`). Images of buildings the actor may not
see are "not found", as in :func:`releasables.resolve`. Everyone who sees an
image sees its plan.

**When.** A plan may change while its image is in the chain (draft, in
review, testing, approved); every change is audited with the plan's new
digest. Once the image is published or released (or later) its plan is
frozen, like its content: a changed plan needs a new version. Since a
customized image is always built on a published base, the inherited part of
its plan never moves under it. A plan change does not send the image back to
draft (the plan is not the image's content); test evidence is bound to the
plan's digest as well, so a run against an older plan no longer matches.

**New versions.** The plan is the building's, not the version's: a rebase's
new draft carries the older version's own checks and its disablings, each
reason and author with it (:func:`carry_plan`, audited ``test_plan.carry``
with what was and was not carried). What the new base makes impossible is
left behind and said so, in the rebase's result and that audit entry, never
silently: a disabling of a check the new base no longer has is dropped, its
reason quoted (the new base is published, so such a check can never come
back to apply, and a kept entry would only hold its name against an own
check); an own check whose name the new base now uses is dropped too, since
the inherited check of that name applies. A carried disabling describes the
new base's check of that name. The older version keeps its plan as it was.
Carrying takes the right to rebase (:data:`Action.MAINTAIN_CUSTOM`), as it
changes no decision the building made; a frozen image's plan is never
carried onto.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from orchestrator.db.models import Releasable, TestCheck
from orchestrator.db.session import transaction
from orchestrator.domain import lifecycle, validation
from orchestrator.domain.digest import content_digest
from orchestrator.domain.policy import Action, Actor, authorize
from orchestrator.domain.states import Kind, Platform, State
from orchestrator.errors import Conflict, Duplicate, InvalidInput, NotFound
from orchestrator.services import audit, releasables
from orchestrator.services.context import Context
from orchestrator.services.refs import REF_PATTERN, building_of, ref_of

DEFAULT_TIMEOUT = 30
MIN_TIMEOUT, MAX_TIMEOUT = 1, 600
MAX_COMMAND = 1000
MAX_OUTPUT = 500
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")

NOT_ADMIN_COMMAND = {Platform.MAC: "sudo -n true", Platform.PC: "net session"}


class CheckKind(StrEnum):
    SIGN_IN = "sign_in"
    HOME_FOLDER = "home_folder"
    APP_PRESENT = "app_present"
    APP_ABSENT = "app_absent"
    REACHABLE = "reachable"
    COMMAND = "command"
    NOT_ADMIN = "not_admin"


class Personas(StrEnum):
    STUDENT = "student"
    STAFF = "staff"
    BOTH = "both"

    @property
    def each(self) -> tuple[str, ...]:
        return ("student", "staff") if self is Personas.BOTH else (self.value,)


class Origin(StrEnum):
    BASE = "base"
    """Inherited from the customized image's base image."""
    OWN = "own"
    """The image's own check."""


# What each kind takes: (required, optional) among the flat fields below.
_FIELDS: Mapping[CheckKind, tuple[frozenset[str], frozenset[str]]] = {
    CheckKind.SIGN_IN: (frozenset(), frozenset()),
    CheckKind.HOME_FOLDER: (frozenset(), frozenset()),
    CheckKind.APP_PRESENT: (frozenset({"path"}), frozenset({"command", "expect_exit"})),
    CheckKind.APP_ABSENT: (frozenset({"path"}), frozenset()),
    CheckKind.REACHABLE: (frozenset({"host", "port"}), frozenset()),
    CheckKind.COMMAND: (frozenset({"command"}), frozenset({"expect_exit", "expect_output"})),
    CheckKind.NOT_ADMIN: (frozenset(), frozenset({"command"})),
}
_PARAM_FIELDS = ("path", "command", "host", "port")
_EXPECT_FIELDS = ("expect_exit", "expect_output")
_KNOWN_KEYS = frozenset({"name", "persona", "kind", "timeout", *_PARAM_FIELDS, *_EXPECT_FIELDS})


@dataclass
class CheckSpec:
    """A check as a person writes it (command line options, or one entry of a file)."""

    name: str
    kind: str
    persona: str
    path: str | None = None
    command: str | None = None
    host: str | None = None
    port: int | None = None
    expect_exit: int | None = None
    expect_output: str | None = None
    timeout: int | None = None


@dataclass(frozen=True)
class PlanCheck:
    """One check of an effective plan."""

    name: str
    personas: Personas
    kind: CheckKind
    params: dict[str, Any]
    expect: dict[str, Any]
    timeout_s: int
    origin: Origin
    source: str
    """The image the check belongs to (the base image's ref for inherited checks)."""

    def digest_content(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "personas": self.personas.value,
            "kind": self.kind.value,
            "params": self.params,
            "expect": self.expect,
            "timeout_s": self.timeout_s,
            "origin": self.origin.value,
        }

    @property
    def describe(self) -> str:
        return describe(self.kind, self.params, self.expect)

    def runner_params(self) -> dict[str, Any]:
        """Parameters and expectation in one mapping, as the check runner
        (remote/persona_checks.py) takes them: ``expect_exit``, ``expect_output``."""
        flat = dict(self.params)
        if isinstance(self.expect.get("exit"), int):
            flat["expect_exit"] = self.expect["exit"]
        if "output" in self.expect:
            flat["expect_output"] = self.expect["output"]
        return flat


@dataclass(frozen=True)
class DisabledCheck:
    name: str
    reason: str
    by: str
    source: str
    """The base image the disabled check comes from."""


@dataclass(frozen=True)
class PlanView:
    image: str
    kind: Kind
    state: State
    base: str | None
    checks: list[PlanCheck]
    disabled: list[DisabledCheck] = field(default_factory=list)
    digest: str = ""
    editable: bool = True


# ---------------------------------------------------------------------------
# Checking what people write
# ---------------------------------------------------------------------------


def _where(name: str | None, index: int | None) -> str:
    parts = []
    if index is not None:
        parts.append(f"entry {index + 1}")
    if name:
        parts.append(f"check {name!r}")
    return ", ".join(parts) or "check"


def _bad(where: str, field_name: str, message: str) -> InvalidInput:
    """'check 'printer': port: 70000 is out of range (1-65535)'."""
    exc = InvalidInput(f"{where}: {field_name}: {message}")
    exc.field = field_name
    return exc


def _dup(where: str, message: str) -> Duplicate:
    exc = Duplicate(f"{where}: name: {message}")
    exc.field = "name"
    return exc


def check_name(value: Any, where: str = "check") -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _bad(
            where,
            "name",
            f"{value!r} is not a check name: 1-63 lowercase letters, digits or '-', "
            "starting with a letter or digit",
        )
    return value


def _int(value: Any, where: str, field_name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(where, field_name, f"{value!r} is not a whole number")
    if not low <= value <= high:
        raise _bad(where, field_name, f"{value} is out of range ({low}-{high})")
    return value


def _line(value: Any, where: str, field_name: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise _bad(where, field_name, f"{value!r} is not text")
    text = value.strip()
    if not text:
        raise _bad(where, field_name, "is empty")
    if len(text) > max_len:
        raise _bad(where, field_name, f"longer than {max_len} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise _bad(where, field_name, "must be one line without control characters")
    return text


def _path(value: Any, where: str, platform: Platform) -> str:
    text = _line(value, where, "path", 500)
    if platform is Platform.PC:
        absolute = PureWindowsPath(text).is_absolute()
        example = r"C:\Program Files\..."
    else:
        absolute = PurePosixPath(text).is_absolute()
        example = "/Applications/..."
    if not absolute:
        raise _bad(
            where, "path", f"{text!r} is not an absolute {platform.value} path (e.g. {example})"
        )
    return text


def _host(value: Any, where: str) -> str:
    text = _line(value, where, "host", 253)
    if not _HOST.fullmatch(text) or ".." in text:
        raise _bad(where, "host", f"{text!r} is not a host name or IPv4 address")
    return text


def normalize(
    spec: CheckSpec, platform: Platform, *, index: int | None = None
) -> tuple[str, Personas, CheckKind, dict[str, Any], dict[str, Any], int]:
    """A check as stored: (name, personas, kind, params, expect, timeout).

    Raises:
        InvalidInput: naming the check and the field: a malformed name, an
            unknown persona or kind, a missing, wrong-typed or inapplicable
            parameter, a relative path, a port or timeout out of range.
    """
    where = _where(spec.name if isinstance(spec.name, str) else None, index)
    name = check_name(spec.name, where)
    try:
        personas = Personas(spec.persona)
    except ValueError:
        raise _bad(
            where, "persona", f"no persona {spec.persona!r} (student, staff or both)"
        ) from None
    try:
        kind = CheckKind(spec.kind)
    except ValueError:
        known = ", ".join(k.value for k in CheckKind)
        raise _bad(where, "kind", f"no kind {spec.kind!r} (kinds: {known})") from None
    required, optional = _FIELDS[kind]
    given = {f for f in (*_PARAM_FIELDS, *_EXPECT_FIELDS) if getattr(spec, f) is not None}
    for missing in sorted(required - given):
        raise _bad(where, missing, f"{kind.value} checks need {missing}")
    for extra in sorted(given - required - optional):
        raise _bad(where, extra, f"does not apply to {kind.value} checks")
    params: dict[str, Any] = {}
    expect: dict[str, Any] = {}
    if spec.path is not None:
        params["path"] = _path(spec.path, where, platform)
    if spec.command is not None:
        # An application's start command is its "start" parameter, as the check runner
        # (remote/persona_checks.py) names it.
        key = "start" if kind is CheckKind.APP_PRESENT else "command"
        params[key] = _line(spec.command, where, "command", MAX_COMMAND)
    if spec.host is not None:
        params["host"] = _host(spec.host, where)
    if spec.port is not None:
        params["port"] = _int(spec.port, where, "port", 1, 65535)
    if spec.expect_exit is not None:
        expect["exit"] = _int(spec.expect_exit, where, "expect_exit", 0, 255)
    if spec.expect_output is not None:
        expect["output"] = _line(spec.expect_output, where, "expect_output", MAX_OUTPUT)
    if kind is CheckKind.NOT_ADMIN:
        params.setdefault("command", NOT_ADMIN_COMMAND[platform])
        expect["exit"] = "nonzero"
    elif kind is CheckKind.COMMAND or (kind is CheckKind.APP_PRESENT and "start" in params):
        expect.setdefault("exit", 0)
    timeout = DEFAULT_TIMEOUT if spec.timeout is None else spec.timeout
    timeout = _int(timeout, where, "timeout", MIN_TIMEOUT, MAX_TIMEOUT)
    return name, personas, kind, params, expect, timeout


def spec_from_mapping(data: Any, index: int) -> CheckSpec:
    """One entry of an imported file as a :class:`CheckSpec`.

    Raises: InvalidInput (not a mapping, an unknown key, a missing name, kind or persona).
    """
    where = _where(None, index)
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{where}: must be a mapping of fields (name, kind, persona, ...)")
    name = data.get("name")
    where = _where(name if isinstance(name, str) else None, index)
    unknown = sorted(str(k) for k in data if k not in _KNOWN_KEYS)
    if unknown:
        raise _bad(where, unknown[0], f"unknown field (fields: {', '.join(sorted(_KNOWN_KEYS))})")
    for needed in ("name", "kind", "persona"):
        if data.get(needed) is None:
            raise _bad(where, needed, "is missing")
    return CheckSpec(**{k: data[k] for k in data})


def describe(kind: CheckKind, params: Mapping[str, Any], expect: Mapping[str, Any]) -> str:
    """What a check checks, in a few words."""
    if kind is CheckKind.SIGN_IN:
        return "signs in"
    if kind is CheckKind.HOME_FOLDER:
        return "home folder exists after sign-in"
    if kind is CheckKind.APP_PRESENT:
        text = f"{params['path']} exists"
        if "start" in params:
            text += f"; `{params['start']}` exits {expect.get('exit', 0)}"
        return text
    if kind is CheckKind.APP_ABSENT:
        return f"{params['path']} absent or not executable"
    if kind is CheckKind.REACHABLE:
        return f"{params['host']}:{params['port']} answers"
    if kind is CheckKind.NOT_ADMIN:
        return f"`{params['command']}` fails (no admin rights)"
    text = f"`{params['command']}` exits {expect.get('exit', 0)}"
    if "output" in expect:
        text += f", output holds {expect['output']!r}"
    return text


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def resolve_image(session: Session, actor: Actor, ref: str) -> Releasable:
    """The base or customized image named by ``ref`` that the actor may see.

    Raises:
        InvalidInput: not a reference, or a software package's. NotFound: no such
            image the actor may see (another building's images are not found).
    """
    text = ref.strip()
    if text.startswith("#") and text[1:].isdigit():
        row = session.get(Releasable, int(text[1:]))
        if row is not None and row.kind == Kind.PACKAGE.value:
            releasables.resolve(session, actor, Kind.PACKAGE, text)  # NotFound if hidden
            raise InvalidInput(
                f"{text} is a software package ({ref_of(row)}), not an image; test plans "
                "belong to base and customized images",
                field="image",
            )
        kind = Kind(row.kind) if row is not None else Kind.BASE_IMAGE
        return releasables.resolve(session, actor, kind, text)
    m = REF_PATTERN.fullmatch(text)
    if not m:
        raise InvalidInput(
            f"{text!r} is not an image reference (e.g. pc-high@2026.1, 101/lab@1.0, or #ID)",
            field="image",
        )
    kind = Kind.CUSTOM_IMAGE if m["scope"] else Kind.BASE_IMAGE
    try:
        return releasables.resolve(session, actor, kind, text)
    except NotFound:
        try:
            releasables.resolve(session, actor, Kind.PACKAGE, text)
        except NotFound:
            pass
        else:
            raise InvalidInput(
                f"{text} is a software package, not an image; test plans belong to base "
                "and customized images",
                field="image",
            ) from None
        raise


def _rows(session: Session, image_id: int | None) -> list[TestCheck]:
    return list(
        session.exec(
            select(TestCheck).where(TestCheck.releasable_id == image_id).order_by(col(TestCheck.id))
        )
    )


def _plan_check(row: TestCheck, origin: Origin, source: str) -> PlanCheck:
    return PlanCheck(
        name=row.name,
        personas=Personas(row.personas),
        kind=CheckKind(row.kind),
        params=dict(row.params),
        expect=dict(row.expect),
        timeout_s=row.timeout_s,
        origin=origin,
        source=source,
    )


def plan_of(session: Session, image: Releasable) -> PlanView:
    """The image's effective plan, in the caller's transaction (no permission check:
    the caller resolved the image for its actor)."""
    own_rows = _rows(session, image.id)
    base = session.get(Releasable, image.base_id) if image.base_id else None
    checks: list[PlanCheck] = []
    disabled: list[DisabledCheck] = []
    if base is not None:
        off = {r.name: r for r in own_rows if r.disabled_reason is not None}
        for r in _rows(session, base.id):
            if r.disabled_reason is not None:
                continue
            if r.name in off:
                d = off[r.name]
                assert d.disabled_reason is not None
                disabled.append(
                    DisabledCheck(r.name, d.disabled_reason, d.created_by, ref_of(base))
                )
            else:
                checks.append(_plan_check(r, Origin.BASE, ref_of(base)))
    checks += [
        _plan_check(r, Origin.OWN, ref_of(image)) for r in own_rows if r.disabled_reason is None
    ]
    state = State(image.state)
    return PlanView(
        image=ref_of(image),
        kind=Kind(image.kind),
        state=state,
        base=ref_of(base) if base is not None else None,
        checks=checks,
        disabled=disabled,
        digest=plan_digest(checks),
        editable=state in lifecycle.REVISABLE,
    )


def plan_digest(checks: Sequence[PlanCheck]) -> str:
    """SHA-256 of the effective plan's canonical JSON (order, fields and origins)."""
    return content_digest({"test_plan": [c.digest_content() for c in checks]})


def show_plan(ctx: Context, actor: Actor, ref: str) -> PlanView:
    """The image's effective plan, what it disabled, and the plan's digest.

    Raises: InvalidInput, NotFound (see :func:`resolve_image`).
    """
    with transaction(ctx.engine) as session:
        return plan_of(session, resolve_image(session, actor, ref))


def effective_plan(ctx: Context, actor: Actor, ref: str) -> list[PlanCheck]:
    """The base's checks (minus those the image disabled), then the image's own.

    Raises: InvalidInput, NotFound (see :func:`resolve_image`).
    """
    return show_plan(ctx, actor, ref).checks


# ---------------------------------------------------------------------------
# Changing
# ---------------------------------------------------------------------------


def _editable(session: Session, actor: Actor, ref: str) -> Releasable:
    image = resolve_image(session, actor, ref)
    action = (
        Action.EDIT_BASE_TEST_PLAN
        if image.kind == Kind.BASE_IMAGE.value
        else Action.EDIT_CUSTOM_TEST_PLAN
    )
    authorize(actor, action, building=building_of(image))
    _require_open(image)
    return image


def _require_open(image: Releasable) -> None:
    """Raises: Conflict: the image is published or later, and its plan with it."""
    state = State(image.state)
    if state not in lifecycle.REVISABLE:
        label = "published" if image.kind == Kind.BASE_IMAGE.value else "released"
        if state is not State.PUBLISHED:
            label = state.value
        raise Conflict(
            f"{Kind(image.kind).label} {ref_of(image)} is {label}; its test plan is frozen "
            "with it (create a new version to test with another plan)"
        )


def _snapshot(row: TestCheck) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": row.name,
        "personas": row.personas,
        "kind": row.kind,
        "params": dict(row.params),
        "expect": dict(row.expect),
        "timeout_s": row.timeout_s,
    }
    if row.disabled_reason is not None:
        data["disabled_reason"] = row.disabled_reason
    return data


def _audit(
    session: Session,
    ctx: Context,
    actor: Actor,
    image: Releasable,
    action: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> None:
    session.flush()
    audit.append(
        session,
        at=ctx.now(),
        actor=actor,
        action=action,
        subject=releasables.subject(image),
        before=before,
        after=after,
        digest=plan_of(session, image).digest,
        reason=reason,
    )


def _add(
    session: Session,
    ctx: Context,
    actor: Actor,
    image: Releasable,
    spec: CheckSpec,
    index: int | None,
) -> TestCheck:
    name, personas, kind, params, expect, timeout = normalize(
        spec, Platform(image.platform), index=index
    )
    where = _where(name, index)
    taken = _taken(session, image, name, where)
    if taken is not None:
        raise taken
    if image.base_id is not None:
        base = session.get(Releasable, image.base_id)
        assert base is not None
        if any(r.name == name for r in _rows(session, base.id)):
            raise _dup(
                where,
                f"{name!r} is inherited from {ref_of(base)}; an inherited check cannot be "
                "redefined: disable it with a reason and add yours under another name",
            )
    assert image.id is not None
    row = TestCheck(
        releasable_id=image.id,
        name=name,
        personas=personas.value,
        kind=kind.value,
        params=params,
        expect=expect,
        timeout_s=timeout,
        created_by=actor.username,
        created_at=ctx.now(),
    )
    try:
        # A savepoint, so that losing a race for the name leaves the transaction
        # usable to read the winner's row and answer as a sequential duplicate.
        with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:
        taken = _taken(session, image, name, where)
        if taken is None:
            raise
        raise taken from exc
    return row


def _taken(session: Session, image: Releasable, name: str, where: str) -> Duplicate | None:
    """The error for a name the image's own plan already uses, if it does."""
    row = next((r for r in _rows(session, image.id) if r.name == name), None)
    if row is None:
        return None
    what = "disabled there" if row.disabled_reason is not None else "already there"
    return _dup(where, f"{ref_of(image)} has a check named {name!r} ({what})")


def add_check(ctx: Context, actor: Actor, ref: str, spec: CheckSpec) -> PlanView:
    """Add one check to the image's own plan.

    Raises:
        InvalidInput (bad check; package ref), Duplicate (name taken, or inherited;
        also when someone else added that name at the same moment), NotFound,
        Refused, Conflict (the image is published or later).
    """
    with transaction(ctx.engine) as session:
        image = _editable(session, actor, ref)
        row = _add(session, ctx, actor, image, spec, None)
        _audit(session, ctx, actor, image, "test_plan.add", after=_snapshot(row))
        return plan_of(session, image)


def import_checks(
    ctx: Context, actor: Actor, ref: str, entries: Any, *, source: str = ""
) -> PlanView:
    """Add a list of checks (an imported file's content), all or nothing.

    Raises:
        InvalidInput: not a list, or any entry bad (naming the entry, check and
            field); Duplicate (a name repeated in the list or already in the plan);
            NotFound, Refused, Conflict. Nothing is added then.
    """
    if not isinstance(entries, list) or not entries:
        raise InvalidInput("a test plan file holds a non-empty list of checks", field="file")
    specs = [spec_from_mapping(e, i) for i, e in enumerate(entries)]
    seen: dict[str, int] = {}
    for i, s in enumerate(specs):
        if not isinstance(s.name, str):
            continue
        if s.name in seen:
            raise _dup(_where(s.name, i), f"the name is used by entry {seen[s.name] + 1} too")
        seen[s.name] = i
    reason = validation.text(f"imported from {source}" if source else "imported", field="file")
    with transaction(ctx.engine) as session:
        image = _editable(session, actor, ref)
        for i, s in enumerate(specs):
            row = _add(session, ctx, actor, image, s, i)
            _audit(session, ctx, actor, image, "test_plan.add", after=_snapshot(row), reason=reason)
        return plan_of(session, image)


def disable_check(ctx: Context, actor: Actor, ref: str, name: str, reason: str) -> PlanView:
    """Turn off, for this customized image, a check inherited from its base, with a reason.

    Raises:
        InvalidInput: no reason; the check is not inherited (the image's own, a base
            image's, or no such check), or already disabled. NotFound, Refused, Conflict.
    """
    why = validation.text(reason, field="reason", max_len=2000, required=True)
    check_name(name)
    with transaction(ctx.engine) as session:
        image = _editable(session, actor, ref)
        plan = plan_of(session, image)
        if image.base_id is None:
            raise InvalidInput(
                f"{ref_of(image)} is a base image: it inherits no checks to disable "
                "(remove its own check instead)",
                field="name",
            )
        if any(d.name == name for d in plan.disabled):
            raise InvalidInput(f"{name!r} is already disabled on {ref_of(image)}", field="name")
        found = next((c for c in plan.checks if c.name == name), None)
        if found is None:
            raise InvalidInput(
                f"{ref_of(image)} inherits no check {name!r} from {plan.base}", field="name"
            )
        if found.origin is Origin.OWN:
            raise InvalidInput(
                f"{name!r} is {ref_of(image)}'s own check, not inherited: remove it instead",
                field="name",
            )
        assert image.id is not None
        row = TestCheck(
            releasable_id=image.id,
            name=name,
            personas=found.personas.value,
            kind=found.kind.value,
            params=found.params,
            expect=found.expect,
            timeout_s=found.timeout_s,
            disabled_reason=why,
            created_by=actor.username,
            created_at=ctx.now(),
        )
        session.add(row)
        _audit(
            session,
            ctx,
            actor,
            image,
            "test_plan.disable",
            before=found.digest_content(),
            after=_snapshot(row),
            reason=why,
        )
        return plan_of(session, image)


def remove_check(ctx: Context, actor: Actor, ref: str, name: str) -> tuple[PlanView, bool]:
    """Remove one of the image's own checks, or take back its disabling of an inherited
    one (which then applies again). Returns the plan and whether a check was re-enabled.

    Raises:
        InvalidInput: the check is inherited (disable it instead). NotFound: no such
            check (or image). Refused, Conflict.
    """
    check_name(name)
    with transaction(ctx.engine) as session:
        image = _editable(session, actor, ref)
        row = next((r for r in _rows(session, image.id) if r.name == name), None)
        if row is None:
            plan = plan_of(session, image)
            if any(c.name == name for c in plan.checks):
                raise InvalidInput(
                    f"{name!r} is inherited from {plan.base}; disable it with a reason instead",
                    field="name",
                )
            raise NotFound(f"{ref_of(image)}'s test plan has no check {name!r}")
        enabled = row.disabled_reason is not None
        before = _snapshot(row)
        session.delete(row)
        _audit(
            session,
            ctx,
            actor,
            image,
            "test_plan.enable" if enabled else "test_plan.remove",
            before=before,
        )
        return plan_of(session, image), enabled


# ---------------------------------------------------------------------------
# A new version of a customized image
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NotCarried:
    """An entry of the older version's plan that its new version does not take."""

    name: str
    entry: str
    """``disabled`` (a disabling of an inherited check) or ``own`` (an own check)."""
    why: str

    @property
    def describe(self) -> str:
        what = f"disabling of {self.name!r}" if self.entry == "disabled" else repr(self.name)
        return f"{what} ({self.why})"


@dataclass(frozen=True)
class CarriedPlan:
    """What :func:`carry_plan` copied from the older version, and what it left."""

    source: str
    checks: list[str] = field(default_factory=list)
    """The own checks carried, in their order."""
    disabled: list[str] = field(default_factory=list)
    """The disablings carried, each with its reason."""
    not_carried: list[NotCarried] = field(default_factory=list)


def carry_plan(
    session: Session, ctx: Context, actor: Actor, old: Releasable, new: Releasable
) -> CarriedPlan:
    """Give ``new``, a new version of the customized image ``old`` (a rebase's
    draft), the older version's own checks and disablings, inside the caller's
    transaction, audited as ``test_plan.carry`` on ``new``. What the new base
    makes impossible is left behind, said in the result and the audit entry (see
    the module docstring).

    Raises:
        Refused: the actor may not maintain the building's customized images.
        InvalidInput: ``new`` is not a version of the same customized image.
        Conflict: ``new``'s plan is frozen, or it has entries of its own already.
    """
    releasables.authorize_maintain(actor, new)
    if (
        old.kind != Kind.CUSTOM_IMAGE.value
        or (new.kind, new.scope_key, new.name) != (old.kind, old.scope_key, old.name)
        or new.id == old.id
    ):
        raise InvalidInput(
            f"{ref_of(new)} is not a new version of the customized image {ref_of(old)}",
            field="image",
        )
    _require_open(new)
    if _rows(session, new.id):
        raise Conflict(
            f"{ref_of(new)} has a test plan of its own already; {ref_of(old)}'s is not "
            "carried over it"
        )
    assert new.id is not None and new.base_id is not None
    base = session.get(Releasable, new.base_id)
    assert base is not None
    inherited = {r.name: r for r in _rows(session, base.id) if r.disabled_reason is None}
    result = CarriedPlan(source=ref_of(old))
    carried: list[dict[str, Any]] = []
    for r in _rows(session, old.id):
        if r.disabled_reason is not None and r.name not in inherited:
            why = f"{ref_of(base)} has no check {r.name!r}; the reason was: {r.disabled_reason}"
            result.not_carried.append(NotCarried(r.name, "disabled", why))
            continue
        if r.disabled_reason is None and r.name in inherited:
            why = f"{ref_of(base)} has a check of that name, which it now inherits"
            result.not_carried.append(NotCarried(r.name, "own", why))
            continue
        # A disabling describes the check it turns off: the new base's, by name.
        like = inherited[r.name] if r.disabled_reason is not None else r
        row = TestCheck(
            releasable_id=new.id,
            name=r.name,
            personas=like.personas,
            kind=like.kind,
            params=dict(like.params),
            expect=dict(like.expect),
            timeout_s=like.timeout_s,
            disabled_reason=r.disabled_reason,
            # Whoever wrote the check or the reason, not whoever rebased it.
            created_by=r.created_by,
            created_at=r.created_at,
        )
        session.add(row)
        carried.append(_snapshot(row))
        (result.disabled if r.disabled_reason is not None else result.checks).append(r.name)
    if not carried and not result.not_carried:
        return result
    left = "; ".join(n.describe for n in result.not_carried)
    _audit(
        session,
        ctx,
        actor,
        new,
        "test_plan.carry",
        before={"from": ref_of(old), "digest": plan_of(session, old).digest},
        after={
            "checks": carried,
            "not_carried": [asdict(n) for n in result.not_carried],
        },
        reason=f"carried from {ref_of(old)}" + (f"; not carried: {left}" if left else ""),
    )
    return result


def check_dict(check: PlanCheck) -> dict[str, Any]:
    """A check as JSON output shows it."""
    data = asdict(check)
    data["description"] = check.describe
    return data
