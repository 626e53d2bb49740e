"""The Approved Technology List: hardware models the Hardware Standards Committee approved."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlmodel import Session, col, func, select

from orchestrator.db.models import HardwareModel
from orchestrator.db.session import transaction
from orchestrator.domain import validation
from orchestrator.domain.policy import Action, Actor, authorize
from orchestrator.domain.states import Platform
from orchestrator.errors import Duplicate, InvalidInput, NotFound
from orchestrator.services import audit
from orchestrator.services.context import Context


def model_ref(m: HardwareModel) -> str:
    return f"{m.vendor}:{m.model}"


def list_models(ctx: Context, actor: Actor) -> Sequence[HardwareModel]:
    authorize(actor, Action.READ_CATALOG, building=None)
    with transaction(ctx.engine) as session:
        return session.exec(
            select(HardwareModel).order_by(col(HardwareModel.vendor), col(HardwareModel.model))
        ).all()


def find_model(session: Session, ref: str) -> HardwareModel:
    """Find a model by ``Vendor:Model`` or by its model name alone (case-insensitive).

    Raises:
        NotFound: no such model, or a bare model name two vendors share.
    """
    vendor, sep, model = ref.partition(":")
    q = select(HardwareModel)
    if sep:
        q = q.where(
            func.lower(HardwareModel.vendor) == vendor.strip().lower(),
            func.lower(HardwareModel.model) == model.strip().lower(),
        )
    else:
        q = q.where(func.lower(HardwareModel.model) == ref.strip().lower())
    found = session.exec(q).all()
    if not found:
        raise NotFound(
            f"hardware model {ref!r} is not on the Approved Technology List "
            "(see 'orchestrator hardware list')"
        )
    if len(found) > 1:
        raise NotFound(f"hardware model {ref!r} is ambiguous: say Vendor:Model")
    return found[0]


def check_usable(m: HardwareModel, platform: Platform, today: date, *, field: str) -> None:
    """A model may be added to a new image only if approved, supported and of its platform.

    Raises:
        InvalidInput: not approved, past end of support, or another platform.
    """
    if not m.approved:
        raise InvalidInput(
            f"{model_ref(m)} is not approved on the Approved Technology List", field=field
        )
    if m.end_of_support is not None and m.end_of_support <= today:
        raise InvalidInput(
            f"{model_ref(m)} is past its end of support ({m.end_of_support.isoformat()}) "
            "and cannot be added to a new image",
            field=field,
        )
    if m.platform != platform.value:
        raise InvalidInput(
            f"{model_ref(m)} is a {m.platform} model, not {platform.value}", field=field
        )


def add_model(
    ctx: Context,
    actor: Actor,
    *,
    vendor: str,
    model: str,
    platform: str,
    end_of_support: date | None,
    approved: bool = True,
) -> HardwareModel:
    """Add a model to the Approved Technology List.

    Raises:
        Refused: only IT records the committee's decisions.
        InvalidInput: bad vendor, model or platform. Duplicate: already listed.
    """
    authorize(actor, Action.MANAGE_HARDWARE, building=None)
    vendor = validation.label(vendor, field="vendor", max_len=60)
    model = validation.label(model, field="model")
    try:
        plat = Platform(platform)
    except ValueError:
        raise InvalidInput(
            f"{platform!r} is not a platform (pc or mac)", field="platform"
        ) from None
    with transaction(ctx.engine) as session:
        exists = session.exec(
            select(HardwareModel).where(
                func.lower(HardwareModel.vendor) == vendor.lower(),
                func.lower(HardwareModel.model) == model.lower(),
            )
        ).first()
        if exists:
            raise Duplicate(f"{vendor}:{model} is already on the Approved Technology List")
        m = HardwareModel(
            vendor=vendor,
            model=model,
            platform=plat.value,
            approved=approved,
            end_of_support=end_of_support,
        )
        session.add(m)
        session.flush()
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action="hardware.add",
            subject=audit.Subject("hardware_model", model_ref(m), m.id),
            after=_snapshot(m),
        )
        return m


def update_model(
    ctx: Context,
    actor: Actor,
    ref: str,
    *,
    approved: bool | None = None,
    end_of_support: date | None = None,
) -> HardwareModel:
    """Change a model's approval or end-of-support date.

    Raises:
        Refused, NotFound.
    """
    authorize(actor, Action.MANAGE_HARDWARE, building=None)
    with transaction(ctx.engine) as session:
        m = find_model(session, ref)
        before = _snapshot(m)
        if approved is not None:
            m.approved = approved
        if end_of_support is not None:
            m.end_of_support = end_of_support
        session.add(m)
        session.flush()
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action="hardware.update",
            subject=audit.Subject("hardware_model", model_ref(m), m.id),
            before=before,
            after=_snapshot(m),
        )
        return m


def _snapshot(m: HardwareModel) -> dict[str, object]:
    return {
        "platform": m.platform,
        "approved": m.approved,
        "end_of_support": m.end_of_support.isoformat() if m.end_of_support else None,
    }
