"""The one settings class.

Values come, highest first, from: keyword arguments, environment variables
prefixed ``ORCHESTRATOR_``, a TOML settings file (``ORCHESTRATOR_CONFIG``,
default ``./orchestrator.toml`` when it exists), then the embedded defaults
below, which need no server: a SQLite file under ``./data``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from orchestrator.errors import InvalidInput

DEFAULT_DATA_DIR = Path("data")


def _config_file() -> Path:
    return Path(os.environ.get("ORCHESTRATOR_CONFIG", "orchestrator.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="forbid")

    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR, description="Folder for the embedded database and run data."
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means a SQLite file data_dir/orchestrator.db.",
    )
    district_timezone: str = Field(
        default="America/New_York",
        description="IANA zone in which dates (sunsets, windows) are read.",
    )
    sunset_lead_days: Annotated[list[int], NoDecode] = Field(
        default=[90, 30, 14, 7, 1],
        description="Days before a sunset at which owners are warned (e.g. 90,30,7).",
    )
    sunset_check_time: str = Field(
        default="02:00", description="Local time (HH:MM) of the scheduler's daily sunset check."
    )
    store_housekeeping_time: str = Field(
        default="03:30",
        description="Local time (HH:MM) of the service's daily 'store gc' and prune of every "
        "building's point; 'off' for none.",
    )
    user: str = Field(default="", description="Who the CLI acts as when --as is not given.")
    ssh_user: str = Field(default="orchestrator", description="Login on Macs (SSH).")
    ssh_key_file: Path | None = Field(
        default=None, description="Private key the orchestrator logs in to Macs with."
    )
    winrm_user: str = Field(default="orchestrator", description="Login on PCs (WinRM).")
    winrm_password: SecretStr | None = Field(
        default=None,
        description="Password for PCs; better kept encrypted with 'orchestrator credentials set'.",
    )
    secret_key_file: Path | None = Field(
        default=None,
        description="Key the stored client secrets are encrypted with (data_dir/secret.key).",
    )
    image_store: Path = Field(
        default=Path("images"),
        description="Folder of the image store: deduplicated chunks and each image's index.",
    )
    staging_lead_hours: int = Field(
        default=12,
        ge=0,
        le=24 * 14,
        description="Stage an image to a building's point this long before its window.",
    )

    distribution_address: str = Field(
        default="127.0.0.1",
        description="Address the orchestrator serves artifacts on during a run; clients "
        "download from it, so it must be one they reach.",
    )
    distribution_port: int = Field(
        default=0, ge=0, lt=65536, description="Its port; 0 picks a free one for each run."
    )

    web_address: str = Field(
        default="127.0.0.1", description="Address the web interface and the API listen on."
    )
    web_port: int = Field(default=8080, ge=0, lt=65536, description="Their port; 0: any free one.")
    web_tls_cert_file: Path | None = Field(
        default=None,
        description="Certificate (PEM) to serve HTTPS with; needed on any address but loopback.",
    )
    web_tls_key_file: Path | None = Field(default=None, description="Its private key (PEM).")
    session_hours: int = Field(
        default=8, ge=1, le=24, description="How long a browser stays signed in."
    )
    lockout_failures: int = Field(
        default=5, ge=1, le=100, description="Wrong passwords in a row that lock an account."
    )
    lockout_minutes: int = Field(
        default=15, ge=1, le=1440, description="How long a locked account stays locked."
    )

    ldap_url: str = Field(
        default="",
        description="The district directory (ldap:// or ldaps://); empty: local accounts only.",
    )
    ldap_bind_dn: str = Field(default="", description="The account the orchestrator searches with.")
    ldap_bind_password: SecretStr | None = Field(default=None, description="Its password.")
    ldap_user_base: str = Field(default="", description="Where people are found.")
    ldap_user_filter: str = Field(
        default="(uid={username})",
        description="How a person is found; Active Directory: (sAMAccountName={username}).",
    )
    ldap_group_base: str = Field(default="", description="Where groups are found.")
    ldap_role_groups: dict[str, str] = Field(
        default_factory=dict,
        description="Group DN per role: it, edtech, and sectec:NNN, btc:NNN, principal:NNN "
        "per building.",
    )
    ldap_start_tls: bool = Field(default=False, description="StartTLS on an ldap:// URL.")
    ldap_ca_file: Path | None = Field(
        default=None, description="CA certificate(s) the directory's certificate is checked with."
    )

    @field_validator("district_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("sunset_lead_days", mode="before")
    @classmethod
    def _day_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().strip("[]")
            try:
                value = [int(p) for p in text.split(",") if p.strip()]
            except ValueError:
                raise ValueError(f"{value!r} is not a list of whole days like 90,30,7") from None
        if isinstance(value, list) and any(not isinstance(d, int) or d <= 0 for d in value):
            raise ValueError("lead days must be positive whole numbers")
        return value

    @field_validator("store_housekeeping_time")
    @classmethod
    def _hh_mm_or_off(cls, value: str) -> str:
        return value if value == "off" else cls._hh_mm(value)

    @field_validator("sunset_check_time")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        hh, sep, mm = value.partition(":")
        if not (sep and hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60):
            raise ValueError(f"{value!r} is not a time of day HH:MM")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.district_timezone)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'orchestrator.db').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings.

    Raises:
        InvalidInput: a malformed settings file, or a setting with a bad value
            (the message names the setting and where settings are read from).
    """
    try:
        return Settings(**overrides)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{_config_file()}: not valid TOML ({exc})") from exc
    except SettingsError as exc:
        raise InvalidInput(f"invalid setting: {exc} (from ORCHESTRATOR_* variables)") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        msg = first["msg"].removeprefix("Value error, ")
        sources = "ORCHESTRATOR_* variables"
        if _config_file().is_file():
            sources += f" and {_config_file()}"
        raise InvalidInput(
            f"invalid setting {where}: {msg} (settings come from {sources})"
        ) from exc
