"""The async 1Password Connect client: every endpoint, typed results, typed errors, bounded retries.

Why this module exists: with its transport (:mod:`~opsync.connect.transport`)
it is the only place in opsync's runtime that speaks HTTP to Connect (the only
importers of ``httpx``), so transport concerns live here and nowhere else:

* **One connection pool per process.** :class:`ConnectClient` owns one
  ``httpx.AsyncClient`` with explicit timeouts. The pool under it is aiohttp's
  (:class:`~opsync.connect.transport.AiohttpTransport`, at most
  ``max_connections`` connections), not httpx's own (httpcore), which cost
  about five times the CPU per request; httpx remains the API. Proxies from
  ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` (minus ``NO_PROXY``) go through
  httpx's proxy transports as before. TLS is verified against the system CAs
  or ``OPSYNC_CONNECT_CA_BUNDLE``. Use it as an async context manager, or call
  :meth:`ConnectClient.aclose`.
* **One error per outcome.** Every non-2xx status becomes an error of
  :mod:`opsync.core.errors` (400 ``BadRequest``, 401 ``Unauthorized``, 403
  ``Forbidden``, 404 ``NotFound``, 413 ``PayloadTooLarge``, 429
  ``RateLimited``, 5xx ``ServerError``, network errors and timeouts
  ``ConnectUnavailable``), carrying the status, the endpoint as a route template
  (``GET /v1/vaults/{vault}/items/{item}``) and the server's message cut short.
  One refinement: Connect 1.x answers a write with a read-only token ``401
  token does not have write access``; the token is valid but lacks a
  permission, so that answer raises ``Forbidden`` (``status`` stays 401).
  Secret values of the request are scrubbed from that message, and responses
  that cannot be parsed raise a plain ``ConnectError`` that names the failing
  attributes, never their content.
* **Bounded retries** (see :meth:`ConnectClient._send`): network errors and
  timeouts, 5xx and 429 are retried up to ``max_retries`` times with
  exponential backoff and jitter, and a 403 up to ``forbidden_retries`` times,
  because Connect sometimes answers a valid token with a transient 403
  (external-secrets issue 4205). Other 4xx are never retried. A ``POST``
  (create) is only retried when the server cannot have acted on it: the
  connection was never made, or the answer was 429 or 403.
* **A concurrency limit**: at most ``max_concurrency`` requests in flight (an
  ``asyncio.Semaphore``; backoff sleeps do not hold it).

Logging choice: httpx logs every request line at INFO with the full URL, which
carries vault and item ids and filter strings with item titles; httpcore (now
only under a proxy) logs response headers at DEBUG; aiohttp's client logs
nothing per request. The client leaves logger levels alone: ``opsync run``
sets ``httpx`` and ``httpcore`` to WARNING unless at debug. The client logs
each exchange itself at DEBUG (method, route template, ids, status, attempt)
and each retry at INFO; bodies and values are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import random
import re
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote

import httpx
from httpx._utils import get_environment_proxies  # private, but httpx's own reading of the proxy variables
from pydantic import BaseModel, ConfigDict, SecretBytes, SecretStr, TypeAdapter, ValidationError

from opsync import __version__
from opsync.connect.config import ConnectConfig
from opsync.connect.models import (
    ActivityPage,
    APIRequest,
    ContentRange,
    File,
    FullItem,
    Item,
    PatchOperation,
    ServerHealth,
    Vault,
)
from opsync.connect.transport import AiohttpTransport
from opsync.core.errors import (
    BadRequest,
    ConnectError,
    ConnectRequestError,
    ConnectUnavailable,
    Forbidden,
    NotFound,
    OpsyncError,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
    shorten,
)

__all__ = ["USER_AGENT", "ConnectClient", "scim_eq"]

logger = logging.getLogger(__name__)

USER_AGENT: Final = f"opsync/{__version__}"

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)

_LIST_CONFIG: Final = ConfigDict(hide_input_in_errors=True)
_VAULTS: Final = TypeAdapter(list[Vault], config=_LIST_CONFIG)
_ITEMS: Final = TypeAdapter(list[Item], config=_LIST_CONFIG)
_FILES: Final = TypeAdapter(list[File], config=_LIST_CONFIG)
_REQUESTS: Final = TypeAdapter(list[APIRequest], config=_LIST_CONFIG)

_STATUS_ERRORS: Final[Mapping[int, type[ConnectRequestError]]] = MappingProxyType(
    {
        400: BadRequest,
        401: Unauthorized,
        403: Forbidden,
        404: NotFound,
        413: PayloadTooLarge,
    }
)

_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport errors raised before any byte of the request left: retrying a POST after them is safe."""

_REDACTED: Final = "[redacted]"
_SHORT_SECRET: Final = 8

_WRITE_ACCESS_DENIED: Final = "does not have write access"
"""Part of Connect's 401 message for a write with a read-only token (mapped to ``Forbidden``)."""


def scim_eq(attribute: str, value: str) -> str:
    """A SCIM ``eq`` filter, ``<attribute> eq "<value>"``, with the value quoted as a JSON string.

    Quotes, backslashes and control characters are escaped (the official SDKs
    do not escape, which breaks titles containing ``"``); other characters,
    including non-ASCII ones, are kept as they are.
    """
    return f"{attribute} eq {json.dumps(value, ensure_ascii=False)}"


class _Route:
    """An endpoint: method and path template. Its ``str`` is what errors and logs show."""

    __slots__ = ("method", "template")

    def __init__(self, method: str, template: str) -> None:
        self.method = method
        self.template = template

    def __str__(self) -> str:
        return f"{self.method} {self.template}"

    def path(self, **ids: str) -> str:
        return self.template.format(**{name: quote(value, safe="") for name, value in ids.items()})


_LIST_VAULTS: Final = _Route("GET", "/v1/vaults")
_GET_VAULT: Final = _Route("GET", "/v1/vaults/{vault}")
_LIST_ITEMS: Final = _Route("GET", "/v1/vaults/{vault}/items")
_CREATE_ITEM: Final = _Route("POST", "/v1/vaults/{vault}/items")
_GET_ITEM: Final = _Route("GET", "/v1/vaults/{vault}/items/{item}")
_REPLACE_ITEM: Final = _Route("PUT", "/v1/vaults/{vault}/items/{item}")
_PATCH_ITEM: Final = _Route("PATCH", "/v1/vaults/{vault}/items/{item}")
_DELETE_ITEM: Final = _Route("DELETE", "/v1/vaults/{vault}/items/{item}")
_LIST_FILES: Final = _Route("GET", "/v1/vaults/{vault}/items/{item}/files")
_GET_FILE: Final = _Route("GET", "/v1/vaults/{vault}/items/{item}/files/{file}")
_FILE_CONTENT: Final = _Route("GET", "/v1/vaults/{vault}/items/{item}/files/{file}/content")
_ACTIVITY: Final = _Route("GET", "/v1/activity")
_HEARTBEAT: Final = _Route("GET", "/heartbeat")
_HEALTH: Final = _Route("GET", "/health")
_METRICS: Final = _Route("GET", "/metrics")


class ConnectClient:
    """An async client for the Connect REST API (``/v1`` plus ``/heartbeat``, ``/health``, ``/metrics``).

    Create one per process and share it; it is safe for concurrent use from one
    event loop. ``transport`` replaces the network layer, proxies included
    (tests only).

    ``observer``, when given, is called once per HTTP attempt (retries
    included) with ``(method, path template, status, seconds)``: the template
    as in ``/v1/vaults/{vault}/items/{item}``, never a concrete path; the status
    code as a string, or ``"error"`` when no response came (network error,
    timeout); the seconds the exchange took, waiting for a free slot of
    ``max_concurrency`` not included. It is meant for metrics
    (:meth:`opsync.ops.metrics.Metrics.connect_request` fits); an exception it
    raises is logged at DEBUG and ignored.
    """

    def __init__(
        self,
        config: ConnectConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: Callable[[str, str, str, float], None] | None = None,
    ) -> None:
        self._config = config
        self._observer = observer
        mounts: dict[str, httpx.AsyncBaseTransport | None] | None = None
        if transport is None:
            verify = _tls_verify(config)
            limits = httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=config.max_connections,
            )
            transport = AiohttpTransport(
                verify=verify,
                max_connections=config.max_connections,
                keepalive_expiry=limits.keepalive_expiry,
            )
            mounts = _environment_proxies(verify, limits)
        self._http = httpx.AsyncClient(
            base_url=config.host,
            headers={
                "Authorization": f"Bearer {config.token.get_secret_value()}",
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
            },
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            follow_redirects=False,
            transport=transport,
            mounts=mounts,
        )
        self._in_flight = asyncio.Semaphore(config.max_concurrency)
        self._random = random.Random()  # jitter only; not security-relevant
        if not config.tls_verify:
            logger.warning("TLS certificate verification of 1Password Connect is turned off")

    def __repr__(self) -> str:
        return f"<ConnectClient {self._config.host}>"

    def set_token(self, token: SecretStr) -> None:
        """Use ``token`` from the next request on (a rotated token, without a new pool); a
        :class:`~opsync.core.errors.ConfigError` when it cannot be a bearer token."""
        self._config = self._config.with_token(token)
        self._http.headers["Authorization"] = f"Bearer {self._config.token.get_secret_value()}"

    @property
    def config(self) -> ConnectConfig:
        return self._config

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; the client cannot be used afterwards."""
        await self._http.aclose()

    # -- vaults -----------------------------------------------------------------------------------

    async def list_vaults(self, *, filter: str | None = None) -> list[Vault]:
        """The vaults the token can see, optionally narrowed by a SCIM filter (``name eq "…"``)."""
        params = {"filter": filter} if filter else None
        response = await self._send(_LIST_VAULTS, params=params)
        return _parse(_VAULTS, response, _LIST_VAULTS)

    async def find_vaults(self, title: str) -> list[Vault]:
        """Every vault named ``title`` (Connect compares names case-insensitively); may be several."""
        return await self.list_vaults(filter=scim_eq("name", title))

    async def get_vault(self, vault_id: str) -> Vault:
        """One vault by id."""
        response = await self._send(_GET_VAULT, ids={"vault": vault_id})
        return _parse_model(Vault, response, _GET_VAULT)

    # -- items ------------------------------------------------------------------------------------

    async def list_items(self, vault_id: str, *, filter: str | None = None) -> list[Item]:
        """Overviews (no fields, no files) of the items of a vault, optionally filtered (SCIM)."""
        params = {"filter": filter} if filter else None
        response = await self._send(_LIST_ITEMS, ids={"vault": vault_id}, params=params)
        return _parse(_ITEMS, response, _LIST_ITEMS)

    async def find_items(self, vault_id: str, title: str) -> list[Item]:
        """Overviews of every item of the vault titled ``title``; may be several."""
        return await self.list_items(vault_id, filter=scim_eq("title", title))

    async def get_item(self, vault_id: str, item_id: str) -> FullItem:
        """One whole item: fields with values, sections, file metadata."""
        response = await self._send(_GET_ITEM, ids={"vault": vault_id, "item": item_id})
        return _parse_model(FullItem, response, _GET_ITEM)

    async def create_item(self, vault_id: str, item: FullItem) -> FullItem:
        """Create an item in the vault (its ``vault.id`` is set to ``vault_id``); returns it as stored.

        Not retried once the request may have reached Connect: a failed create
        may or may not have created the item.
        """
        body = item.to_wire()
        body["vault"] = {**body.get("vault", {}), "id": vault_id}
        response = await self._send(
            _CREATE_ITEM, ids={"vault": vault_id}, body=body, idempotent=False, secrets=_secrets_of(item)
        )
        return _parse_model(FullItem, response, _CREATE_ITEM)

    async def replace_item(self, vault_id: str, item_id: str, item: FullItem) -> FullItem:
        """Replace a whole item (PUT): fields left out are removed. ``id`` and ``vault.id`` follow the path.

        Connect answers with the version from *before* the change; read the item
        again for the new one.
        """
        body = item.to_wire()
        body["id"] = item_id
        body["vault"] = {**body.get("vault", {}), "id": vault_id}
        ids = {"vault": vault_id, "item": item_id}
        response = await self._send(_REPLACE_ITEM, ids=ids, body=body, secrets=_secrets_of(item))
        return _parse_model(FullItem, response, _REPLACE_ITEM)

    async def patch_item(self, vault_id: str, item_id: str, operations: Sequence[PatchOperation]) -> FullItem:
        """Apply a JSON Patch (``add``/``remove``/``replace``; fields addressed by id) to an item."""
        body = [operation.to_wire() for operation in operations]
        secrets = [secret for operation in operations for secret in _secrets_of(operation.value, plain=True)]
        ids = {"vault": vault_id, "item": item_id}
        response = await self._send(_PATCH_ITEM, ids=ids, body=body, secrets=secrets)
        return _parse_model(FullItem, response, _PATCH_ITEM)

    async def delete_item(self, vault_id: str, item_id: str) -> None:
        """Delete an item for good."""
        await self._send(_DELETE_ITEM, ids={"vault": vault_id, "item": item_id})

    # -- files ------------------------------------------------------------------------------------

    async def list_files(self, vault_id: str, item_id: str, *, inline_files: bool = False) -> list[File]:
        """The files of an item; with ``inline_files`` each carries its content (413 when too large)."""
        params = {"inline_files": "true"} if inline_files else None
        response = await self._send(_LIST_FILES, ids={"vault": vault_id, "item": item_id}, params=params)
        return _parse(_FILES, response, _LIST_FILES)

    async def get_file(
        self, vault_id: str, item_id: str, file_id: str, *, inline_files: bool = False
    ) -> File:
        """One file's metadata; with ``inline_files`` also its content (413 when too large)."""
        params = {"inline_files": "true"} if inline_files else None
        ids = {"vault": vault_id, "item": item_id, "file": file_id}
        response = await self._send(_GET_FILE, ids=ids, params=params)
        return _parse_model(File, response, _GET_FILE)

    async def get_file_content(self, vault_id: str, item_id: str, file_id: str) -> SecretBytes:
        """Download a file's content (any size)."""
        ids = {"vault": vault_id, "item": item_id, "file": file_id}
        response = await self._send(_FILE_CONTENT, ids=ids, accept="application/octet-stream")
        return SecretBytes(response.content)

    async def get_item_with_files(
        self, vault_id: str, item_id: str, *, item: FullItem | None = None
    ) -> tuple[FullItem, dict[str, SecretBytes]]:
        """An item and the content of each of its files, keyed by file id.

        ``item`` is the item when the caller has just read it (it is not read
        again). Files are downloaded from the content endpoint, at most
        ``file_concurrency`` at a time; the first failure cancels the others and
        is raised.
        """
        if item is None:
            item = await self.get_item(vault_id, item_id)
        files = item.files or []
        file_ids: list[str] = []
        for file in files:
            if not file.id:
                raise ConnectError(
                    f"item {item_id} in vault {vault_id} lists a file without an id",
                    endpoint=str(_GET_ITEM),
                )
            file_ids.append(file.id)
        gate = asyncio.Semaphore(self._config.file_concurrency)

        async def download(file_id: str) -> SecretBytes:
            async with gate:
                return await self.get_file_content(vault_id, item_id, file_id)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = {file_id: group.create_task(download(file_id)) for file_id in dict.fromkeys(file_ids)}
        except BaseExceptionGroup as failures:
            raise _first_leaf(failures) from None
        return item, {file_id: task.result() for file_id, task in tasks.items()}

    # -- activity, health, metrics ----------------------------------------------------------------

    async def list_activity(self, *, limit: int | None = None, offset: int | None = None) -> ActivityPage:
        """A page of the API requests Connect has served (newest first), with its ``Content-Range``."""
        params: dict[str, str] = {}
        if limit is not None:
            params["limit"] = str(limit)
        if offset is not None:
            params["offset"] = str(offset)
        response = await self._send(_ACTIVITY, params=params or None)
        requests = _parse(_REQUESTS, response, _ACTIVITY)
        return ActivityPage(
            requests=requests, range=ContentRange.parse(response.headers.get("Content-Range"))
        )

    async def heartbeat(self) -> None:
        """Liveness: returns when Connect answers ``GET /heartbeat`` with 200, raises otherwise."""
        await self._send(_HEARTBEAT, accept="text/plain")

    async def health(self) -> ServerHealth:
        """The server's name, version and the state of its dependencies."""
        response = await self._send(_HEALTH)
        return _parse_model(ServerHealth, response, _HEALTH)

    async def metrics(self) -> str:
        """The Prometheus exposition text of ``GET /metrics``, as is."""
        response = await self._send(_METRICS, accept="text/plain")
        return response.text

    # -- transport --------------------------------------------------------------------------------

    async def _send(
        self,
        route: _Route,
        *,
        ids: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        idempotent: bool = True,
        secrets: Sequence[str] = (),
        accept: str | None = None,
    ) -> httpx.Response:
        """Send one request with the retry policy; return the 2xx response or raise a ConnectError.

        Retry policy, per call: at most ``1 + max_retries`` attempts. Retried:
        transport errors and timeouts (``ConnectUnavailable``), 5xx
        (``ServerError``), 429 (``RateLimited``; waits ``Retry-After`` when the
        server sends one no longer than ``retry_after_max``, else gives up at
        once), and 403 (``Forbidden``) at most ``forbidden_retries`` times.
        Never retried: 400, 401 (also when raised as ``Forbidden``), 404, 413 and
        any other status. When
        ``idempotent`` is false (POST), only a request that cannot have been
        acted on is retried: connection not established, 429 or 403. The delay
        before retry *n* (1-based) is ``d/2 + uniform(0, d/2)`` with
        ``d = min(backoff_max, backoff_initial * 2**(n-1))``.
        """
        config = self._config
        path = route.path(**(ids or {}))
        endpoint = str(route)
        where = _describe_ids(ids)
        headers = {"Accept": accept} if accept else None
        forbidden_left = config.forbidden_retries
        attempt = 0
        while True:
            attempt += 1
            started = sent = time.monotonic()
            reached_server = True
            try:
                async with self._in_flight:
                    sent = time.monotonic()
                    response = await self._http.request(
                        route.method, path, params=params, json=body, headers=headers
                    )
            except httpx.RequestError as exc:
                self._observe(route, "error", time.monotonic() - sent)
                reached_server = not isinstance(exc, _NOT_SENT)
                reason = "timed out" if isinstance(exc, httpx.TimeoutException) else "could not be reached"
                error: ConnectError = ConnectUnavailable(
                    f"Connect {reason} ({type(exc).__name__}) on {endpoint}{where}", endpoint=endpoint
                )
                logger.debug(
                    "connect %s%s: %s after %.3fs (attempt %d)",
                    endpoint,
                    where,
                    type(exc).__name__,
                    time.monotonic() - started,
                    attempt,
                )
                cause: BaseException | None = exc
            else:
                self._observe(route, str(response.status_code), time.monotonic() - sent)
                logger.debug(
                    "connect %s%s: %d in %.3fs (attempt %d)",
                    endpoint,
                    where,
                    response.status_code,
                    time.monotonic() - started,
                    attempt,
                )
                if response.is_success:
                    return response
                error = _error_for(response, endpoint, where, secrets)
                cause = None

            retryable = error.retryable
            if isinstance(error, Forbidden) and error.status == 403:
                retryable = forbidden_left > 0
                forbidden_left -= 1
            safe = idempotent or not reached_server or isinstance(error, RateLimited | Forbidden)
            delay = self._backoff(attempt)
            if isinstance(error, RateLimited) and error.retry_after is not None:
                if error.retry_after > config.retry_after_max:
                    retryable = False
                delay = max(delay, error.retry_after)
            if not (retryable and safe and attempt <= config.max_retries):
                if attempt > 1:
                    # The message was built before the decision; say how hard the client tried.
                    error.args = (f"{error.args[0]} (gave up after {attempt} attempts)",)
                raise error from cause
            logger.info(
                "connect %s%s failed (%s), retry %d of %d in %.2fs",
                endpoint,
                where,
                error.status if error.status is not None else type(error).__name__,
                attempt,
                config.max_retries,
                delay,
            )
            await asyncio.sleep(delay)

    def _observe(self, route: _Route, status: str, seconds: float) -> None:
        """Report one attempt to the observer; its failure must never fail the request."""
        if self._observer is None:
            return
        try:
            self._observer(route.method, route.template, status, seconds)
        except Exception as exc:
            logger.debug("connect request observer raised %s; ignored", type(exc).__name__, exc_info=True)

    def _backoff(self, attempt: int) -> float:
        config = self._config
        ceiling = min(config.backoff_max, config.backoff_initial * 2.0 ** (attempt - 1))
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)


# -- helpers --------------------------------------------------------------------------------------


def _tls_verify(config: ConnectConfig) -> ssl.SSLContext | bool:
    """The TLS setting of the transports: an SSL context with the custom CAs, True for the
    system's (aiohttp's own verifying context, loaded when it was imported: a context of our own
    would load the system's CAs once more, 20 ms and about a MiB), or False."""
    if not config.tls_verify:
        return False
    if config.ca_bundle is not None:
        return ssl.create_default_context(cafile=str(config.ca_bundle))
    if config.ca_pem is not None:
        return ssl.create_default_context(cadata=config.ca_pem)
    return True


def _environment_proxies(
    verify: ssl.SSLContext | bool, limits: httpx.Limits
) -> dict[str, httpx.AsyncBaseTransport | None]:
    """The proxy transports httpx mounts from ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY``.

    httpx mounts them itself only when it makes its own transport; given one, it
    ignores the environment. These are the same mounts, built the way httpx
    builds them (its own parser of the variables; an httpcore transport per
    proxy, with the client's TLS setting and limits; ``None`` for a ``NO_PROXY``
    pattern, which means the default transport), so proxies work as they did.
    """
    return {
        pattern: None if url is None else httpx.AsyncHTTPTransport(verify=verify, limits=limits, proxy=url)
        for pattern, url in get_environment_proxies().items()
    }


def _describe_ids(ids: Mapping[str, str] | None) -> str:
    if not ids:
        return ""
    return " (" + ", ".join(f"{name} {value}" for name, value in ids.items()) + ")"


def _error_for(response: httpx.Response, endpoint: str, where: str, secrets: Sequence[str]) -> ConnectError:
    """The error for a non-2xx response, with the server's message scrubbed and cut short."""
    status = response.status_code
    message = _server_message(response)
    write_access_denied = status == 401 and _WRITE_ACCESS_DENIED in message.casefold()
    text = f"Connect answered {status} on {endpoint}{where}: {shorten(_scrub(message, secrets))}"
    if status == 429:
        return RateLimited(
            text,
            status=status,
            endpoint=endpoint,
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )
    if status >= 500:
        return ServerError(text, status=status, endpoint=endpoint)
    error_class = _STATUS_ERRORS.get(status, ConnectRequestError)
    if write_access_denied:
        # Connect 1.x answers a write with a read-only token 401, yet the token is valid:
        # it lacks a permission, which is what Forbidden means (status stays 401).
        error_class = Forbidden
    return error_class(text, status=status, endpoint=endpoint)


def _scrub(message: str, secrets: Sequence[str]) -> str:
    """``message`` with every secret of the request replaced by ``[redacted]``.

    Secrets of 8 characters or more go wherever they appear; shorter ones only
    where they stand alone (not inside a word), so that a one-letter value does
    not shred the message.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if len(secret) >= _SHORT_SECRET:
            message = message.replace(secret, _REDACTED)
        else:
            pattern = rf"(?<![^\W_]){re.escape(secret)}(?![^\W_])"
            message = re.sub(pattern, _REDACTED, message)
    return message


def _server_message(response: httpx.Response) -> str:
    """The ``message`` of a JSON error body, else the HTTP reason phrase."""
    try:
        payload = json.loads(response.content)
    except ValueError:
        payload = None
    if isinstance(payload, Mapping):
        message = payload.get("message")
        if isinstance(message, str) and message.strip():
            return message
    return response.reason_phrase or "no message"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); ``None`` if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


def _validation_summary(exc: ValidationError) -> str:
    """Which attributes failed and how (error types only: no values, no messages)."""
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or '<body>'}: {error['type']}"
        for error in exc.errors(include_input=False, include_url=False, include_context=False)[:5]
    ]
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def _parse(adapter: TypeAdapter[_T], response: httpx.Response, route: _Route) -> _T:
    try:
        return adapter.validate_json(response.content)
    except ValidationError as exc:
        summary = _validation_summary(exc)
    raise ConnectError(f"unexpected response body from Connect on {route}: {summary}", endpoint=str(route))


def _parse_model(model: type[_M], response: httpx.Response, route: _Route) -> _M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        summary = _validation_summary(exc)
    raise ConnectError(f"unexpected response body from Connect on {route}: {summary}", endpoint=str(route))


def _secrets_of(value: Any, *, plain: bool = False) -> list[str]:
    """The secret strings inside a request payload, to scrub them from server messages.

    Secret types anywhere count; with ``plain`` (patch values), every string does.
    """
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, SecretStr):
            found.append(node.get_secret_value())
        elif isinstance(node, SecretBytes):
            raw = node.get_secret_value()
            found.append(raw.decode("utf-8", errors="replace"))
            found.append(base64.b64encode(raw).decode("ascii"))
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name))
            walk(node.__pydantic_extra__ or {})
        elif isinstance(node, Mapping):
            for item in node.values():
                walk(item)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)
        elif plain and isinstance(node, str):
            found.append(node)

    walk(value)
    return [secret for secret in found if secret]


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error in a (possibly nested) exception group, preferring opsync's own."""
    leaves: list[BaseException] = []

    def collect(exceptions: Iterable[BaseException]) -> None:
        for exc in exceptions:
            if isinstance(exc, BaseExceptionGroup):
                collect(exc.exceptions)
            else:
                leaves.append(exc)

    collect(group.exceptions)
    for leaf in leaves:
        if isinstance(leaf, OpsyncError):
            return leaf
    return leaves[0]
