"""The one error tree of opsync.

Every layer raises these, and only the kopf layer translates them into kopf's
``TemporaryError``/``PermanentError``. Each error knows whether retrying can
help (``retryable``) and carries only safe context: names, ids, HTTP statuses
and server messages cut short. A secret value never goes into a message.

    OpsyncError
    ├── ConfigError                 invalid settings; stops start-up
    ├── SpecError                   invalid custom resource or item content; permanent
    ├── ConnectError                any failed exchange with 1Password Connect
    │   ├── ConnectTransientError   retryable
    │   │   ├── ConnectUnavailable  network error or timeout (no HTTP status)
    │   │   ├── RateLimited         429
    │   │   └── ServerError         5xx
    │   └── ConnectRequestError     the request itself was refused; retrying the same is useless
    │       ├── BadRequest          400
    │       ├── Unauthorized        401
    │       ├── Forbidden           403
    │       ├── NotFound            404
    │       └── PayloadTooLarge     413
    ├── ConnectionUnusable          a connection object cannot be used as it is (no token, …)
    └── KubeError                   a Kubernetes API call failed

(``selection.FieldNotFound`` and ``templating.TemplateError`` are SpecErrors too, defined where
they are raised.)

:class:`Reason` is the one vocabulary of reasons users see: in the Ready condition of a
``OnePasswordItem`` (``Synced``, or a failure reason from :data:`FAILURE_REASONS`) and in
Events (those, plus the Event-only :data:`EVENT_REASONS`). README.md's reason table lists every
failure reason (a unit test keeps the two in step).
"""

from __future__ import annotations

from enum import StrEnum

MESSAGE_LIMIT = 256
"""Server-provided text is cut to this many characters before it is kept."""


def shorten(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Cut untrusted text short, so a huge or unexpected body never floods logs or status."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Reason(StrEnum):
    """Why a sync ended as it did, as status conditions and Events say it.

    A ``StrEnum``: each member is its CamelCase string, so status, Events and metrics labels carry
    exactly the text they always did.
    """

    # Ready=True (and the Event posted when an item becomes Ready again).
    Synced = "Synced"

    # Ready=False, and the Warning Event posted when it starts or its reason changes.
    InvalidSpec = "InvalidSpec"
    InvalidItemPath = "InvalidItemPath"
    InvalidAnnotation = "InvalidAnnotation"
    VaultNotFound = "VaultNotFound"
    ItemNotFound = "ItemNotFound"
    Forbidden = "Forbidden"
    Unauthorized = "Unauthorized"
    ConnectUnavailable = "ConnectUnavailable"
    RateLimited = "RateLimited"
    SecretConflict = "SecretConflict"
    TypeChangeRefused = "TypeChangeRefused"
    FieldNotFound = "FieldNotFound"
    FieldAmbiguous = "FieldAmbiguous"
    FileUnavailable = "FileUnavailable"
    KeyCollision = "KeyCollision"
    InvalidKey = "InvalidKey"
    TemplateError = "TemplateError"
    InvalidMetadata = "InvalidMetadata"
    MissingSecretKey = "MissingSecretKey"
    InvalidSecretData = "InvalidSecretData"
    SecretTooLarge = "SecretTooLarge"
    ConnectError = "ConnectError"
    KubernetesError = "KubernetesError"
    NoConnection = "NoConnection"
    ConnectionNotFound = "ConnectionNotFound"
    ConnectionNotAllowed = "ConnectionNotAllowed"
    TokenNotFound = "TokenNotFound"
    Error = "Error"
    InternalError = "InternalError"

    # The conditions beside Ready: ContentValid's when True (False: InvalidSecretData), and
    # Contested's (another writer keeps changing the Secret back).
    Valid = "Valid"
    RivalWriter = "RivalWriter"
    # A OnePasswordConnection's Ready=True (its failures are the item failure reasons above).
    Connected = "Connected"

    # Events only: never a condition reason.
    SecretSynced = "SecretSynced"
    SecretRenamed = "SecretRenamed"
    DriftRepaired = "DriftRepaired"
    MissingItemName = "MissingItemName"
    RolloutRestarted = "RolloutRestarted"

    @property
    def is_failure(self) -> bool:
        """Whether this reason says a sync failed (Ready=False and a Warning Event)."""
        return self in FAILURE_REASONS


SUCCESS_REASONS: frozenset[Reason] = frozenset({Reason.Synced})
"""The reasons of Ready=True."""
EVENT_REASONS: frozenset[Reason] = frozenset(
    {
        Reason.SecretSynced,
        Reason.SecretRenamed,
        Reason.DriftRepaired,
        Reason.MissingItemName,
        Reason.RolloutRestarted,
    }
)
"""The reasons only Events carry, never a condition."""
CONDITION_REASONS: frozenset[Reason] = frozenset({Reason.Valid, Reason.RivalWriter, Reason.Connected})
"""The reasons of the conditions beside Ready that are no failure: ContentValid=True (a typed
Secret's content follows its type's rules), Contested=True (another writer keeps changing the
Secret back, so opsync backs off) and a connection's Ready=True (``Connected``)."""
FAILURE_REASONS: frozenset[Reason] = frozenset(Reason) - SUCCESS_REASONS - EVENT_REASONS - CONDITION_REASONS
"""The reasons of Ready=False: every member not listed above."""


class OpsyncError(Exception):
    """Base of every error opsync raises on purpose."""

    retryable: bool = False


class ConfigError(OpsyncError):
    """Invalid operator configuration: start-up stops with this message."""


class SpecError(OpsyncError):
    """The custom resource (or the item it points at) cannot be turned into a Secret."""

    def __init__(self, message: str, *, reason: Reason = Reason.InvalidSpec) -> None:
        super().__init__(message)
        self.reason = reason


class ConnectError(OpsyncError):
    """A request to 1Password Connect failed."""

    status: int | None = None

    def __init__(self, message: str, *, status: int | None = None, endpoint: str | None = None) -> None:
        super().__init__(shorten(message))
        if status is not None:
            self.status = status
        self.endpoint = endpoint


class ConnectTransientError(ConnectError):
    """A failure that may go away by itself: retry with backoff."""

    retryable = True


class ConnectUnavailable(ConnectTransientError):
    """Connect could not be reached, or did not answer in time."""


class RateLimited(ConnectTransientError):
    """Connect answered 429 Too Many Requests."""

    status = 429

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        endpoint: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, endpoint=endpoint)
        self.retry_after = retry_after


class ServerError(ConnectTransientError):
    """Connect answered with a 5xx status."""

    status = 500


class ConnectRequestError(ConnectError):
    """Connect refused the request; sending it again unchanged will not help."""


class BadRequest(ConnectRequestError):
    """400: an invalid body, patch or filter."""

    status = 400


class Unauthorized(ConnectRequestError):
    """401: the token is missing, malformed, revoked or from another server."""

    status = 401


class Forbidden(ConnectRequestError):
    """403: the token has no access to that vault, or not at that level."""

    status = 403


class NotFound(ConnectRequestError):
    """404: no such vault, item or file (or it is hidden from this token)."""

    status = 404


class PayloadTooLarge(ConnectRequestError):
    """413: the response would be too large (for example inline file content)."""

    status = 413


class ConnectionUnusable(OpsyncError):
    """A OnePasswordConnection (or cluster one) cannot be used as it stands: its token Secret is
    missing, its spec is invalid, … Nothing is asked of Connect; ``reason`` says why."""

    def __init__(self, message: str, *, reason: Reason = Reason.TokenNotFound) -> None:
        super().__init__(message)
        self.reason = reason


class KubeError(OpsyncError):
    """A call to the Kubernetes API failed."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(shorten(message))
        self.status = status
        self.retryable = retryable
