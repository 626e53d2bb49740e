"""How the orchestrator logs in to clients (the secrets themselves live in vault).

Its own module so that :mod:`vault`, which makes these from the encrypted
store, and :mod:`runs`, which hands them to a run, need not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import InvalidInput


@dataclass(frozen=True)
class Credentials:
    """How the orchestrator logs in to clients; never stored in runs or artifacts."""

    ssh_user: str = "orchestrator"
    ssh_key: str | None = field(default=None, repr=False)
    winrm_user: str = "orchestrator"
    winrm_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_files(
        cls,
        *,
        ssh_user: str,
        ssh_key_file: Path | None,
        winrm_user: str,
        winrm_password: str | None,
    ) -> Credentials:
        """Raises: InvalidInput when the key file cannot be read."""
        key = None
        if ssh_key_file is not None:
            try:
                key = ssh_key_file.read_text()
            except OSError as exc:
                raise InvalidInput(
                    f"cannot read the SSH key {ssh_key_file}: {exc.strerror}", field="ssh_key_file"
                ) from exc
        return cls(ssh_user, key, winrm_user, winrm_password)
