"""The orchestrator's one exception tree.

Every error a user can meet carries a stable ``code`` (for scripts and the
API), an HTTP status (for the API to come) and a message written for the
person who caused it: what was wrong and where.

::

    OrchestratorError
    ├── InvalidInput            422  bad value, malformed file, wrong reference type
    │   └── Duplicate           409  the thing already exists
    ├── SignInFailed            401  wrong username or password, locked, no role granted
    │   └── NoRoleGranted            the directory knows the person but grants no role
    ├── NotFound                404  unknown building, image, person, model
    ├── Refused                 403  the role, scope or chain does not allow it
    ├── Conflict                409  the object is not in a state that allows it
    │   ├── InvalidTransition   409  the lifecycle table has no such move
    │   └── StaleState          409  someone else moved it first (compare-and-set lost)
    ├── SunsetReached           409  past the effective sunset date
    ├── AuditTampered           500  the audit hash chain does not verify
    └── RemoteError             502  a client computer could not be reached or refused us
        ├── HostUnreachable          no route, connection refused, timed out connecting
        ├── AuthenticationFailed     wrong password or key (not retried)
        ├── AccessDenied             authenticated, but not allowed (not retried)
        ├── RemoteTimeout            the operation timed out (may be re-polled)
        ├── HostKeyChanged           the SSH host key differs from the pinned one
        └── DirectoryUnavailable 503 the district's LDAP directory did not answer

Library exceptions are translated at the adapter boundary (``raise ... from
exc``); nothing above the adapters sees a SQLAlchemy or Ansible exception.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base of every error the orchestrator raises on purpose."""

    code = "error"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(OrchestratorError):
    """A value, reference or file the user gave is not acceptable."""

    code = "invalid_input"
    http_status = 422
    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class Duplicate(InvalidInput):
    """The thing being created already exists."""

    code = "duplicate"
    http_status = 409


class SignInFailed(OrchestratorError):
    """Who is signing in could not be established, or was refused a role."""

    code = "sign_in_failed"
    http_status = 401
    exit_code = 3


class NoRoleGranted(SignInFailed):
    """The directory knows the person, but none of their groups maps to one role here."""

    code = "no_role_granted"


class NotFound(OrchestratorError):
    """A reference names nothing the catalog knows (or nothing the actor may see)."""

    code = "not_found"
    http_status = 404
    exit_code = 4


class Refused(OrchestratorError):
    """The actor's role, building scope or the approval chain forbids the action."""

    code = "refused"
    http_status = 403
    exit_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(message if message.startswith("refused:") else f"refused: {message}")


class Conflict(OrchestratorError):
    """The object's current state does not allow the action."""

    code = "conflict"
    http_status = 409
    exit_code = 5


class InvalidTransition(Conflict):
    """The lifecycle table has no move for this event from the current state."""

    code = "invalid_transition"


class StaleState(Conflict):
    """A compare-and-set write found the object already moved by someone else."""

    code = "stale_state"


class SunsetReached(OrchestratorError):
    """The image (or the base it derives from) is at or past its sunset date."""

    code = "sunset_reached"
    http_status = 409
    exit_code = 5


class AuditTampered(OrchestratorError):
    """The audit log's hash chain is broken: a row was changed, removed or inserted."""

    code = "audit_tampered"
    http_status = 500
    exit_code = 6


class RemoteError(OrchestratorError):
    """A client computer could not be reached, or refused what we asked."""

    code = "remote_error"
    http_status = 502
    exit_code = 8

    def __init__(self, message: str, *, host: str | None = None) -> None:
        super().__init__(f"{host}: {message}" if host else message)
        self.host = host


class HostUnreachable(RemoteError):
    code = "host_unreachable"


class AuthenticationFailed(RemoteError):
    code = "authentication_failed"


class AccessDenied(RemoteError):
    code = "access_denied"


class RemoteTimeout(RemoteError):
    code = "remote_timeout"


class HostKeyChanged(RemoteError):
    """The host presented another SSH host key than the one pinned at import."""

    code = "host_key_changed"


class DirectoryUnavailable(RemoteError):
    """The district's directory (LDAP / Active Directory) did not answer: sign-in fails closed."""

    code = "directory_unavailable"
    http_status = 503
