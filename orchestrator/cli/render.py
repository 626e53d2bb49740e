"""Rich tables and panels for the catalog's objects."""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from orchestrator.domain.states import State
from orchestrator.services.audit import AuditEntry
from orchestrator.services.catalog import ReleasableView
from orchestrator.services.chain import ChainStatus

STATE_STYLE = {
    State.DRAFT: "dim",
    State.IN_REVIEW: "yellow",
    State.TESTING: "yellow",
    State.APPROVED: "cyan",
    State.PUBLISHED: "green",
    State.DEPRECATED: "magenta",
    State.SUNSET: "red",
    State.RETIRED: "dim",
}


def state_text(s: State) -> str:
    return f"[{STATE_STYLE[s]}]{s.value}[/]"


def days_text(days: int | None) -> str:
    if days is None:
        return "-"
    if days <= 0:
        return f"[red]{days}[/]"
    if days <= 30:
        return f"[yellow]{days}[/]"
    return str(days)


_SHORT_KIND = {"base_image": "base", "custom_image": "image", "package": "package"}


def releasables(title: str, items: Sequence[ReleasableView]) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("ref", no_wrap=True)
    t.add_column("kind", no_wrap=True)
    t.add_column("state", no_wrap=True)
    t.add_column("base / os / audience")
    t.add_column("sunset", no_wrap=True)
    t.add_column("days", justify="right", no_wrap=True)
    t.add_column("flags")
    for v in items:
        detail = v.base or (v.audience.value if v.audience else (v.os_version or ""))
        t.add_row(
            escape(v.ref),
            _SHORT_KIND[v.kind.value],
            state_text(v.state),
            escape(detail),
            v.effective_sunset.isoformat() if v.effective_sunset else "-",
            days_text(v.days_to_sunset),
            "[red]rebase[/]" if v.needs_rebase else "",
        )
    return t


def detail(v: ReleasableView) -> Table:
    t = Table(show_header=False, title=f"{v.kind.label} {escape(v.ref)}", title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    rows: list[tuple[str, str]] = [
        ("state", state_text(v.state)),
        ("digest", v.digest),
        ("platform", v.platform.value),
    ]
    if v.level:
        rows.append(("level", v.level.value))
    if v.building:
        rows.append(("building", v.building))
    if v.os_version:
        rows.append(("os", v.os_version))
    if v.base:
        rows.append(("base", v.base))
    if v.audience:
        rows.append(("audience", v.audience.value))
    if v.artifact_ref:
        rows.append(("artifact", f"{v.artifact_ref}\nsha256:{v.artifact_sha256}"))
    if v.detection_rule:
        rows.append(("detection", v.detection_rule))
    if v.packages:
        rows.append(("packages", ", ".join(v.packages)))
    if v.settings:
        rows.append(("settings", ", ".join(f"{k}={val}" for k, val in sorted(v.settings.items()))))
    rows.append(("models", ", ".join(v.models) or "-"))
    own = v.sunset_date.isoformat() if v.sunset_date else "-"
    eff = v.effective_sunset.isoformat() if v.effective_sunset else "-"
    rows.append(("sunset", f"{own} (effective {eff}, {days_text(v.days_to_sunset)} days)"))
    if v.needs_rebase:
        rows.append(("rebase", "[red]needed: a newer base was published[/]"))
    if v.supersedes:
        rows.append(("rebased from", v.supersedes))
    rows.append(("author", v.author + (f" (revised by {v.revised_by})" if v.revised_by else "")))
    rows.append(("created", v.created_at.isoformat(timespec="seconds")))
    if v.published_at:
        rows.append(("published", v.published_at.isoformat(timespec="seconds")))
    if v.notes:
        rows.append(("notes", v.notes))
    for k, val in rows:
        t.add_row(k, val if k in ("state", "sunset", "rebase") else escape(val))
    return t


def chain_status(st: ChainStatus) -> list[Table]:
    steps = Table(title="approval chain", title_justify="left")
    for c in ("step", "status", "who may decide", "decided by", "at", "reason"):
        steps.add_column(c)
    style = {"done": "green", "pending": "yellow", "waiting": "dim"}
    for s in st.steps:
        steps.add_row(
            s.step.value,
            f"[{style.get(s.status, 'white')}]{s.status}[/]",
            escape(s.who),
            s.decided_by or "",
            s.at.isoformat(timespec="seconds") if s.at else "",
            escape(s.reason),
        )
    out = [steps]
    if st.tests:
        tests = Table(title="test runs", title_justify="left")
        for c in ("#", "persona", "account", "result", "checks", "by", "for current digest"):
            tests.add_column(c)
        for r in st.tests:
            checks = ", ".join(
                f"{c['name']}: {'pass' if c['passed'] else 'FAIL'}" for c in r.checks
            )
            tests.add_row(
                str(r.id),
                r.persona.value,
                escape(r.account),
                "[green]pass[/]" if r.passed else "[red]fail[/]",
                escape(checks),
                r.actor,
                "yes" if r.current else "[dim]no (content changed since)[/]",
            )
        out.append(tests)
    if st.decisions:
        d = Table(title="decisions", title_justify="left")
        for c in ("step", "outcome", "by", "role", "reason", "for current digest", "at"):
            d.add_column(c)
        for row in st.decisions:
            d.add_row(
                row["step"],
                row["outcome"],
                row["by"],
                row["role"],
                escape(row["reason"]),
                "yes" if row["current"] else "[dim]no[/]",
                row["at"].isoformat(timespec="seconds"),
            )
        out.append(d)
    return out


def audit_entries(entries: Sequence[AuditEntry]) -> Table:
    t = Table(title="audit log", title_justify="left")
    for c in ("#", "at (UTC)", "who", "role", "action", "object", "digest", "change / reason"):
        t.add_column(c)
    for e in entries:
        change = ""
        if e.before and e.after and e.before.get("state") != e.after.get("state"):
            change = f"{e.before.get('state')} → {e.after.get('state')}"
        elif e.after and "state" in e.after and e.before is None:
            change = f"→ {e.after['state']}"
        if e.reason:
            change = f"{change} ({e.reason})" if change else e.reason
        t.add_row(
            str(e.seq),
            e.at.strftime("%Y-%m-%d %H:%M"),
            e.actor,
            e.role,
            e.action,
            escape(e.object_ref),
            (e.digest or "")[7:19],
            escape(change),
        )
    return t
