"""What every use case needs: the database, the clock and the district's zone."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from orchestrator.clock import Clock, system_clock
from orchestrator.config import DEFAULT_DATA_DIR, Settings
from orchestrator.db.session import make_engine
from orchestrator.domain.sunset import DEFAULT_LEAD_DAYS, district_today
from orchestrator.services.sign_in_directory import Directory, directory_from_settings


@dataclass
class Context:
    engine: Engine
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("America/New_York"))
    clock: Clock = system_clock
    lead_days: tuple[int, ...] = DEFAULT_LEAD_DAYS
    evidence_dir: Path = DEFAULT_DATA_DIR / "evidence"
    """Where test evidence files are kept (by content)."""
    secret_key_file: Path = DEFAULT_DATA_DIR / "secret.key"
    """The key the client login secrets are encrypted with (see services/vault.py)."""
    image_store_dir: Path = Path("images")
    """The image store's folder (see services/image_store.py)."""
    directory: Directory | None = None
    """The district's LDAP / Active Directory, when one is configured
    (services/sign_in_directory.py)."""
    lockout_failures: int = 5
    lockout_minutes: int = 15
    session_hours: int = 8

    def now(self) -> datetime:
        return self.clock()

    def today(self) -> date:
        return district_today(self.clock(), self.zone)

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock = system_clock) -> Context:
        return cls(
            engine=make_engine(settings.resolved_database_url),
            zone=settings.zone,
            clock=clock,
            lead_days=tuple(settings.sunset_lead_days),
            evidence_dir=settings.data_dir / "evidence",
            secret_key_file=settings.secret_key_file or settings.data_dir / "secret.key",
            image_store_dir=settings.image_store,
            directory=directory_from_settings(settings),
            lockout_failures=settings.lockout_failures,
            lockout_minutes=settings.lockout_minutes,
            session_hours=settings.session_hours,
        )
