"""Rich tables and panels for the catalog's objects."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from orchestrator.domain.states import State
from orchestrator.services.audit import AuditEntry
from orchestrator.services.catalog import ReleasableView
from orchestrator.services.chain import ChainStatus, TestRunView

STATETABLE_STYLE = {
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
    return f"[{STATETABLE_STYLE[s]}]{s.value}[/]"


def kib(n: int | None) -> str:
    """A size given in KiB, for people: '12.4 GiB'."""
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} KiB"
    size, unit = n / 1024, "MiB"
    for bigger in ("GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"


def days_text(days: int | None) -> str:
    if days is None:
        return "-"
    if days <= 0:
        return f"[red]{days}[/]"
    if days <= 30:
        return f"[yellow]{days}[/]"
    return str(days)


TABLE_STYLE: dict[str, Any] = {"title_justify": "left", "box": box.SIMPLE_HEAD, "pad_edge": False}

_SHORT_KIND = {"base_image": "base", "custom_image": "image", "package": "package"}


def releasables(title: str, items: Sequence[ReleasableView]) -> Table:
    t = Table(title=title, **TABLE_STYLE)
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


def when(moment: datetime | None, zone: tzinfo) -> str:
    """A moment as the district reads it: local date and time, to the minute."""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment else ""


def detail(v: ReleasableView, zone: tzinfo) -> Table:
    t = Table(
        show_header=False,
        title=f"{v.kind.label} {escape(v.ref)}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    t.add_column(style="bold")
    t.add_column()
    rows: list[tuple[str, str]] = [
        ("id", f"#{v.id}"),
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
        label = {"custom_image": "overlay", "package": "installer"}.get(v.kind.value, "artifact")
        rows.append((label, f"{v.artifact_ref}\nsha256:{v.artifact_sha256}"))
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
    rows.append(("created", when(v.created_at, zone)))
    if v.published_at:
        rows.append(("published", when(v.published_at, zone)))
    if v.notes:
        rows.append(("notes", v.notes))
    for k, val in rows:
        t.add_row(k, val if k in ("state", "sunset", "rebase") else escape(val))
    return t


def chain_status(st: ChainStatus, zone: tzinfo) -> list[Table]:
    steps = Table(title="approval chain", **TABLE_STYLE)
    for c in ("step", "status", "who may decide", "decided by", "at", "reason"):
        steps.add_column(c)
    style = {"done": "green", "pending": "yellow", "waiting": "dim"}
    for s in st.steps:
        steps.add_row(
            s.step.value,
            f"[{style.get(s.status, 'white')}]{s.status}[/]",
            escape(s.who),
            s.decided_by or "",
            when(s.at, zone),
            escape(s.reason),
        )
    out = [steps]
    if st.tests:
        tests = Table(title="test runs", **TABLE_STYLE)
        for c in ("#", "persona", "account", "result", "checks", "from", "by", "counts"):
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
                escape(test_source(r)),
                r.actor,
                test_counts(r, st.item.digest),
            )
        out.append(tests)
    # Decisions the step table does not already show: rejections, approvals of
    # content that has changed since, and sign-offs over failing checks.
    if any(
        d["outcome"] != "approve" or not d["current"] or d.get("overridden") for d in st.decisions
    ):
        d = Table(title="decisions", **TABLE_STYLE)
        headings = ("step", "outcome", "by", "role", "reason", "overrode", "for current digest")
        for c in (*headings, "at"):
            d.add_column(c, overflow="fold" if c == "overrode" else "ellipsis")
        for row in st.decisions:
            d.add_row(
                row["step"],
                row["outcome"],
                row["by"],
                row["role"],
                escape(row["reason"]),
                escape(overridden_text(row.get("overridden") or [])),
                "yes" if row["current"] else "[dim]no[/]",
                when(row["at"], zone),
            )
        out.append(d)
    return out


def test_source(r: TestRunView) -> str:
    """Where a test run came from: an image test run on a test client, or by hand."""
    if r.image_test is not None:
        return f"image test #{r.image_test} on {r.client or '?'}"
    if r.counts:
        return "recorded by hand"
    return "recorded by hand (a note: does not count for images)"


def test_counts(r: TestRunView, digest: str) -> str:
    """Whether the run is evidence the test step counts now, and if not, why."""
    if not r.counts:
        return "[dim]no (not an image test run)[/]"
    if r.current:
        return "yes"
    if r.digest != digest:
        return "[dim]no (content changed since)[/]"
    return "[dim]no (test plan changed since)[/]"


def overridden_text(items: Sequence[dict[str, Any]]) -> str:
    """A decision's overridden checks: 'student:not-admin (image test #4)'."""
    return ", ".join(
        f"{o.get('persona', '?')}:{o.get('check', '?')}"
        + (f" (image test #{o['image_test']})" if o.get("image_test") is not None else "")
        for o in items
    )


def audit_entries(entries: Sequence[AuditEntry], zone: tzinfo) -> Table:
    t = Table(title=f"audit log (times in {zone})", **TABLE_STYLE)
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("at", no_wrap=True)
    t.add_column("who (role)", max_width=14, overflow="fold")
    t.add_column("action", max_width=22, overflow="fold")
    t.add_column("object / digest", max_width=20, overflow="fold")
    t.add_column("change / reason", min_width=20, ratio=1)
    for e in entries:
        t.add_row(
            str(e.seq),
            when(e.at, zone),
            f"{e.actor}\n({e.role})",
            _short_action(e.action),
            escape(e.object_ref) + (f"\n{e.digest[7:19]}" if e.digest else ""),
            escape(_change(e)),
        )
    return t


def _short_action(action: str) -> str:
    """'custom_image.review.approve' reads as 'image.review.approve' in a narrow table."""
    kind, _, rest = action.partition(".")
    return f"{_SHORT_KIND.get(kind, kind)}.{rest}" if rest else action


def _change(e: AuditEntry) -> str:
    before, after = e.before or {}, e.after or {}
    if e.action.endswith(".test") and "persona" in after:
        change = f"{after['persona']}: {'pass' if after.get('passed') else 'FAIL'}"
        if after.get("failed_checks"):
            change += f" ({', '.join(after['failed_checks'])})"
    elif before.get("state") != after.get("state") and "state" in after:
        change = f"{before.get('state', '')} → {after['state']}".strip()
    else:
        change = ""
    if e.reason:
        change = f"{change}: {e.reason}" if change else e.reason
    return change


def counted(count: int, noun: str) -> str:
    """``1 chunk``, ``2 chunks``: the count and the noun, plural unless one."""
    return f"{count} {noun}" + ("" if count == 1 else "s")
