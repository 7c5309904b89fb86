"""The HTTP API: Connect's 15 endpoints on aiohttp.web, with Connect's statuses, messages and headers.

Why this module exists: this is the wire contract the official SDKs and operator
see. aiohttp's low-level server (:mod:`protocol`) hands every request it can parse
to :meth:`ConnectApi.handle`, which does its own routing so that it can accept
what real clients send (trailing slashes from the JS SDK, a doubled leading slash
from the Go SDK with a host ending in ``/``), label metrics by route template, and
answer unknown routes, wrong methods (405 with ``Allow``) and ``Expect`` headers
with JSON. Checks run in the order the behaviour notes recommend: route → token
(401) → id syntax (400) → vault scope (403; a write with a read-only token is
401 like Connect 1.x) → existence (404) → body (400).

Every response carries ``1Password-Connect-Version``; the Go SDK refuses file
calls without it. Nothing here logs a token, a field value or file content.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from aiohttp import HttpVersion11, web

from opsync.tooling.connectserver import bodies, filters, patch, serialize
from opsync.tooling.connectserver.activity import Action, ActivityLog, Actor, Resource, Result
from opsync.tooling.connectserver.faults import FaultInjector
from opsync.tooling.connectserver.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from opsync.tooling.connectserver.metrics import UNMATCHED, ServerMetrics
from opsync.tooling.connectserver.models import ID_RE, Item, ItemFile, Vault
from opsync.tooling.connectserver.protocol import VERSION_HEADER, error_response, rejection_reason
from opsync.tooling.connectserver.store import ItemNotFound, Store, VaultNotFound
from opsync.tooling.connectserver.tokens import Access, TokenAuthority, TokenClaims, TokenError

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("opsync.tooling.connectserver.access")

MAX_BODY_SIZE = 8 * 1024 * 1024
"""Largest request body read (413 above)."""
NO_VAULT_ACCESS = "Authorization: token does not have access to vault"
NO_READ_ACCESS = "Authorization: token does not have read access to vault"
NO_WRITE_ACCESS = "Unauthorized Request, token does not have write access to the Vault"
VAULT_ATTRIBUTES = frozenset({"name", "title", "id"})
ITEM_ATTRIBUTES = frozenset({"title", "tag", "tags", "id", "category", "favorite"})
BOOLEANS: Mapping[str, bool] = MappingProxyType({"true": True, "false": False})
"""Accepted boolean query values (ASCII case ignored): the spec's and the behaviour notes' spelling."""
MAX_QUERY_INT = 2**63 - 1
"""Largest integer query value: Connect is a Go server, whose integers are 64-bit."""
_DIGITS = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True)
class ServerOptions:
    """Behaviour switches (defaults follow real Connect servers)."""

    connect_version: str = "1.8.1"
    """Sent as ``1Password-Connect-Version`` and in ``/health``; three dot-separated numbers."""
    max_inline_file_size_kb: int = 100
    """Largest file ``inline_files=true`` returns; larger → 413 (``OP_MAX_INLINE_FILE_SIZE_KB``)."""
    put_returns_old_version: bool = True
    """PUT and PATCH answers report the version from before the change, as Connect does."""
    filter_case_sensitive_items: bool = False
    """Item filters compare titles and tags case-sensitively (vault names never are)."""
    read_only_write_status: int = 401
    """Status for a write with a read-only token: 401 as Connect 1.x answers; 403 for stricter proxies."""
    unknown_vault_status: int = 403
    """Status for a vault id that exists nowhere: 403 like Connect; 404 for a more permissive server."""
    activity_capacity: int = 10_000
    """How many activity records are kept (oldest dropped first)."""


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    handler: str
    public: bool = False

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(part for part in self.template.split("/") if part)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/activity", "activity"),
    Route("GET", "/v1/vaults", "list_vaults"),
    Route("GET", "/v1/vaults/{vaultUuid}", "get_vault"),
    Route("GET", "/v1/vaults/{vaultUuid}/items", "list_items"),
    Route("POST", "/v1/vaults/{vaultUuid}/items", "create_item"),
    Route("GET", "/v1/vaults/{vaultUuid}/items/{itemUuid}", "get_item"),
    Route("PUT", "/v1/vaults/{vaultUuid}/items/{itemUuid}", "replace_item"),
    Route("PATCH", "/v1/vaults/{vaultUuid}/items/{itemUuid}", "patch_item"),
    Route("DELETE", "/v1/vaults/{vaultUuid}/items/{itemUuid}", "delete_item"),
    Route("GET", "/v1/vaults/{vaultUuid}/items/{itemUuid}/files", "list_files"),
    Route("GET", "/v1/vaults/{vaultUuid}/items/{itemUuid}/files/{fileUuid}", "get_file"),
    Route("GET", "/v1/vaults/{vaultUuid}/items/{itemUuid}/files/{fileUuid}/content", "file_content"),
    Route("GET", "/heartbeat", "heartbeat", public=True),
    Route("GET", "/health", "health", public=True),
    Route("GET", "/metrics", "metrics", public=True),
)


class ApiError(Exception):
    """An error answer: ``{"status": ..., "message": ...}``; ``deny`` records it as DENY activity."""

    def __init__(
        self, status: int, message: str, *, deny: bool = False, headers: Mapping[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.deny = deny
        self.headers = dict(headers or {})


class _Dropped(Exception):
    """The connection was closed on purpose (fault injection)."""


@dataclass
class _Context:
    request: web.BaseRequest
    params: dict[str, str]
    claims: TokenClaims | None = None
    action: Action | None = None
    resource: Resource | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def match_route(method: str, raw_path: str) -> tuple[Route | None, dict[str, str], tuple[str, ...]]:
    """The route for this request, its path parameters, and the methods the path accepts.

    Empty segments are ignored, so ``/v1/vaults/``, ``//v1/vaults`` and ``/v1/vaults`` are one route.
    No route and some methods means 405 (with ``Allow``); no route and no methods means 404.
    """
    path = raw_path.split("?", 1)[0]
    segments = [urllib.parse.unquote(part) for part in path.split("/") if part]
    allowed: list[str] = []
    found: tuple[Route, dict[str, str]] | None = None
    for route in ROUTES:
        template = route.segments
        if len(template) != len(segments):
            continue
        params: dict[str, str] = {}
        for expected, actual in zip(template, segments, strict=True):
            if expected.startswith("{"):
                params[expected[1:-1]] = actual
            elif expected != actual:
                break
        else:
            allowed.append(route.method)
            if route.method == method:
                found = route, params
    if found is not None:
        return found[0], found[1], tuple(allowed)
    return None, {}, tuple(allowed)


class ConnectApi:
    """Serves one store; every request goes through :meth:`handle`."""

    def __init__(
        self,
        *,
        store: Store,
        authority: TokenAuthority,
        injector: FaultInjector,
        metrics: ServerMetrics,
        activity: ActivityLog,
        options: ServerOptions,
    ) -> None:
        self.store = store
        self.authority = authority
        self.injector = injector
        self.metrics = metrics
        self.activity = activity
        self.options = options
        self._handlers: dict[str, Callable[[_Context], Awaitable[web.StreamResponse]]] = {
            route.handler: getattr(self, f"_{route.handler}") for route in ROUTES
        }

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The answer to one request: always JSON unless a route serves something else."""
        started = time.perf_counter()
        # rel_url: the path as sent (still percent-encoded), also for an absolute-form target.
        path = request.rel_url.raw_path
        route, params, allowed = match_route(request.method, path)
        endpoint = route.template if route is not None else UNMATCHED
        status = "500"
        try:
            response = await self._expect(request) or await self._serve(request, route, params, allowed)
            response.headers[VERSION_HEADER] = self.options.connect_version
            status = str(response.status)
            return response
        except _Dropped:
            status = "dropped"
            return web.Response(status=500)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe(request.method, endpoint, status, elapsed)
            access_logger.info("%s %s -> %s (%.1f ms)", request.method, path, status, elapsed * 1000)

    async def _serve(
        self, request: web.BaseRequest, route: Route | None, params: dict[str, str], allowed: tuple[str, ...]
    ) -> web.StreamResponse:
        if route is None:
            if allowed:
                # RFC 9110 §15.5.6: a 405 lists the methods the path accepts.
                return error_response(405, "Method Not Allowed", {"Allow": ", ".join(allowed)})
            return error_response(404, "Not Found")
        context = _Context(request, params)
        try:
            if route.template.startswith("/v1/"):
                await self._inject_faults(request)
            if not route.public:
                context.claims = self._authenticate(request)
            response = await self._handlers[route.handler](context)
        except ApiError as exc:
            if exc.deny:
                self._record(context, "DENY")
            return error_response(exc.status, exc.message, exc.headers)
        except web.HTTPException as exc:
            return error_response(exc.status, exc.reason)
        except _Dropped:
            raise
        except Exception:
            logger.exception("%s %s failed", request.method, route.template)
            return error_response(500, "Something went wrong")
        self._record(context, "SUCCESS")
        return response

    @staticmethod
    async def _expect(request: web.BaseRequest) -> web.Response | None:
        """``Expect: 100-continue`` gets its interim answer (as aiohttp's default handler sends it); others 417.

        Only HTTP/1.1 has ``Expect`` (RFC 9110 §10.1.1); aiohttp ignores it on HTTP/1.0 too.
        """
        expect = request.headers.get("Expect")
        if expect is None or request.version != HttpVersion11:
            return None
        if expect.lower() != "100-continue":
            return error_response(417, "Expectation Failed: only 100-continue is supported")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # The interim answer is not the answer: an error answer may still follow.
        request.writer.output_size = 0
        return None

    async def _inject_faults(self, request: web.BaseRequest) -> None:
        config = self.injector.config
        if config.latency_seconds > 0:
            self.metrics.fault("latency")
            await asyncio.sleep(config.latency_seconds)
        if self.injector.roll("drop"):
            self.metrics.fault("drop")
            if request.transport is not None:
                request.transport.abort()
            raise _Dropped
        if self.injector.roll("error"):
            self.metrics.fault("error")
            raise ApiError(500, "Something went wrong")
        if self.injector.roll("rate_limit"):
            self.metrics.fault("rate_limit")
            raise ApiError(429, "Too Many Requests", headers={"Retry-After": str(config.retry_after_seconds)})

    def _authenticate(self, request: web.BaseRequest) -> TokenClaims:
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
        try:
            return self.authority.verify(token.strip())
        except TokenError as exc:
            raise ApiError(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None

    def _record(self, context: _Context, result: Result) -> None:
        if context.claims is None or context.action is None or context.resource is None:
            return
        request = context.request
        actor = Actor(
            id=context.claims.server_id,
            account=context.claims.account,
            token_id=context.claims.token_id,
            user_agent=request.headers.get("User-Agent", ""),
            request_ip=request.remote or "",
        )
        self.activity.record(context.action, result, actor, context.resource)

    # --------------------------------------------------------------------------------------- helpers

    def _vault(self, context: _Context, need: Access, action: Action) -> Vault:
        """The vault of the path, after the id-syntax, scope, level and existence checks."""
        claims = context.claims
        assert claims is not None
        vault_id = context.params["vaultUuid"]
        item_id = context.params.get("itemUuid")
        if not ID_RE.match(vault_id):
            raise ApiError(400, "Invalid Vault UUID")
        if item_id is not None and not ID_RE.match(item_id):
            raise ApiError(400, "Invalid Item UUID")
        context.action = action
        context.resource = Resource("ITEM", vault_id, item_id) if item_id else Resource("VAULT", vault_id)
        granted = claims.access(vault_id)
        if not granted:
            if self.options.unknown_vault_status != 403 and self.store.vault_by_id(vault_id) is None:
                raise ApiError(self.options.unknown_vault_status, f"vault {vault_id} not found")
            raise ApiError(403, NO_VAULT_ACCESS, deny=True)
        if need & Access.READ and not granted & Access.READ:
            raise ApiError(403, NO_READ_ACCESS, deny=True)
        if need & Access.WRITE and not granted & Access.WRITE:
            raise ApiError(self.options.read_only_write_status, NO_WRITE_ACCESS, deny=True)
        if self.injector.roll("transient_403"):
            self.metrics.fault("transient_403")
            raise ApiError(403, NO_VAULT_ACCESS, deny=True)
        vault = self.store.vault_by_id(vault_id)
        if vault is None:
            raise ApiError(404, f"vault {vault_id} not found")
        return vault

    @staticmethod
    def _item(context: _Context, vault: Vault) -> Item:
        item_id = context.params["itemUuid"]
        item = vault.item(item_id)
        if item is None:
            raise ApiError(404, f"item {item_id} not found")
        context.resource = Resource("ITEM", vault.id, item.id, item.version)
        return item

    @staticmethod
    def _file(context: _Context, item: Item) -> ItemFile:
        file_id = context.params["fileUuid"]
        for file in item.files:
            if file.id == file_id:
                return file
        raise ApiError(404, f"file {file_id} not found")

    @staticmethod
    def _filter(context: _Context, attributes: frozenset[str]) -> filters.Filter:
        try:
            return filters.parse(context.request.query.get("filter"), attributes)
        except filters.FilterError as exc:
            raise ApiError(400, f"Invalid filter: {exc}") from None

    def _inline(self, context: _Context, files: list[ItemFile]) -> bool:
        query = context.request.query
        # The spec names the flag inline_files, the developer docs inline_content: both count.
        inline_files = query_bool(query, "inline_files")
        inline_content = query_bool(query, "inline_content")
        requested = inline_files or inline_content
        limit = self.options.max_inline_file_size_kb * 1024
        if requested and any(file.size > limit for file in files):
            raise ApiError(
                413,
                "File is too large to inline in request. Use the "
                "/v1/vaults/{vaultUUID}/items/{itemUUID}/files/{fileUUID}/content endpoint instead.",
            )
        return requested

    @staticmethod
    async def _json_body(context: _Context) -> Any:
        try:
            raw = await context.request.read()
        except web.RequestPayloadError as exc:
            # The parser refused the body (bad chunked framing, a broken gzip stream).
            raise ApiError(400, f"Invalid request body: {rejection_reason(exc)}") from None
        except ConnectionError:
            # Nobody reads this answer; it makes the request one access-log line, not a traceback.
            raise ApiError(400, "Invalid request body: the connection closed before its end") from None
        try:
            return json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "Invalid request body: not valid JSON") from None

    def _changed_item_json(self, vault_id: str, before: Item, after: Item) -> web.Response:
        version = before.version if self.options.put_returns_old_version else None
        return web.json_response(serialize.item_json(vault_id, after, version=version))

    async def _apply(
        self, context: _Context, vault: Vault, build: Callable[[Item, datetime], Item]
    ) -> web.Response:
        item_id = context.params["itemUuid"]

        def change_item(_vault: Vault, before: Item | None, now: datetime) -> Item:
            assert before is not None
            return build(before, now)

        try:
            change = await self.store.change_item(vault.id, item_id, change_item)
        except ItemNotFound:
            raise ApiError(404, f"item {item_id} not found") from None
        except VaultNotFound:
            raise ApiError(404, f"vault {vault.id} not found") from None
        except (bodies.InvalidItem, patch.InvalidPatch) as exc:
            raise ApiError(400, str(exc)) from None
        assert change.before is not None and change.after is not None
        context.resource = Resource("ITEM", vault.id, item_id, change.after.version)
        return self._changed_item_json(vault.id, change.before, change.after)

    # -------------------------------------------------------------------------------------- endpoints

    async def _list_vaults(self, context: _Context) -> web.StreamResponse:
        claims = context.claims
        assert claims is not None
        selection = self._filter(context, VAULT_ATTRIBUTES)
        context.action, context.resource = "READ", Resource("VAULT")
        visible = [
            vault
            for vault in self.store.vaults()
            if claims.access(vault.id)
            and selection.matches({"name": [vault.name], "title": [vault.name], "id": [vault.id]})
        ]
        visible.sort(key=lambda vault: (vault.name.casefold(), vault.created_at))
        return web.json_response([serialize.vault_json(vault) for vault in visible])

    async def _get_vault(self, context: _Context) -> web.StreamResponse:
        return web.json_response(serialize.vault_json(self._vault(context, Access.READ, "READ")))

    async def _list_items(self, context: _Context) -> web.StreamResponse:
        vault = self._vault(context, Access.READ, "READ")
        selection = self._filter(context, ITEM_ATTRIBUTES)
        case_sensitive = self.options.filter_case_sensitive_items
        items = [
            item
            for item in vault.items
            if selection.matches(
                {
                    "title": [item.title],
                    "tag": list(item.tags),
                    "tags": list(item.tags),
                    "id": [item.id],
                    "category": [item.category],
                    "favorite": [item.favorite],
                },
                case_sensitive=case_sensitive,
            )
        ]
        return web.json_response([serialize.item_summary_json(vault.id, item) for item in items])

    async def _create_item(self, context: _Context) -> web.StreamResponse:
        vault = self._vault(context, Access.WRITE, "CREATE")
        try:
            body = bodies.parse_body(await self._json_body(context))
            change = await self.store.change_item(
                vault.id,
                None,
                lambda _v, _before, now: bodies.build_item(
                    body, vault_id=vault.id, item_id=None, existing=None, now=now
                ),
            )
        except bodies.InvalidItem as exc:
            raise ApiError(400, str(exc)) from None
        except VaultNotFound:
            raise ApiError(404, f"vault {vault.id} not found") from None
        assert change.after is not None
        context.resource = Resource("ITEM", vault.id, change.after.id, change.after.version)
        return web.json_response(serialize.item_json(vault.id, change.after))

    async def _get_item(self, context: _Context) -> web.StreamResponse:
        vault = self._vault(context, Access.READ, "READ")
        return web.json_response(serialize.item_json(vault.id, self._item(context, vault)))

    async def _replace_item(self, context: _Context) -> web.StreamResponse:
        vault = self._vault(context, Access.WRITE, "UPDATE")
        self._item(context, vault)
        try:
            body = bodies.parse_body(await self._json_body(context))
        except bodies.InvalidItem as exc:
            raise ApiError(400, str(exc)) from None
        item_id = context.params["itemUuid"]
        return await self._apply(
            context,
            vault,
            lambda before, now: bodies.build_item(
                body, vault_id=vault.id, item_id=item_id, existing=before, now=now
            ),
        )

    async def _patch_item(self, context: _Context) -> web.StreamResponse:
        vault = self._vault(context, Access.READ_WRITE, "UPDATE")
        current = self._item(context, vault)
        try:
            operations = patch.parse_operations(await self._json_body(context))
        except patch.InvalidPatch as exc:
            raise ApiError(400, str(exc)) from None
        if not operations:
            return web.json_response(serialize.item_json(vault.id, current))
        item_id = context.params["itemUuid"]

        def build(before: Item, now: datetime) -> Item:
            patched = patch.apply(serialize.patch_document(before), operations)
            body = bodies.parse_body(patched)
            return bodies.build_item(body, vault_id=vault.id, item_id=item_id, existing=before, now=now)

        return await self._apply(context, vault, build)

    async def _delete_item(self, context: _Context) -> web.StreamResponse:
        vault = self._vault(context, Access.WRITE, "DELETE")
        item = self._item(context, vault)
        try:
            await self.store.change_item(vault.id, item.id, lambda _v, _before, _now: None)
        except ItemNotFound:
            raise ApiError(404, f"item {item.id} not found") from None
        except VaultNotFound:
            raise ApiError(404, f"vault {vault.id} not found") from None
        return web.Response(status=204)

    async def _list_files(self, context: _Context) -> web.StreamResponse:
        vault = self._vault(context, Access.READ, "READ")
        item = self._item(context, vault)
        inline = self._inline(context, item.files)
        return web.json_response(
            [serialize.file_json(vault.id, item.id, file, inline=inline) for file in item.files]
        )

    async def _get_file(self, context: _Context) -> web.StreamResponse:
        vault = self._vault(context, Access.READ, "READ")
        item = self._item(context, vault)
        file = self._file(context, item)
        inline = self._inline(context, [file])
        return web.json_response(serialize.file_json(vault.id, item.id, file, inline=inline))

    async def _file_content(self, context: _Context) -> web.StreamResponse:
        vault = self._vault(context, Access.READ, "READ")
        item = self._item(context, vault)
        file = self._file(context, item)
        return web.Response(
            body=file.content,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": _content_disposition(file.name),
            },
        )

    async def _activity(self, context: _Context) -> web.StreamResponse:
        limit = query_int(context.request.query, "limit", default=50)
        offset = query_int(context.request.query, "offset", default=0)
        records, total = self.activity.page(limit=limit, offset=offset)
        first = offset + 1 if records else offset
        last = offset + len(records)
        return web.json_response(
            [record.to_json() for record in records],
            headers={"Content-Range": f"{first}-{last}/{total}"},
        )

    async def _heartbeat(self, _context: _Context) -> web.StreamResponse:
        return web.Response(text=".", content_type="text/plain")

    async def _health(self, _context: _Context) -> web.StreamResponse:
        return web.json_response(
            {
                "name": "1Password Connect API",
                "version": self.options.connect_version,
                "dependencies": [
                    {"service": "sqlite", "status": "ACTIVE", "message": "Serving the opsync data file"},
                    {"service": "account_data", "status": "ACTIVE"},
                    {"service": "sync", "status": "ACTIVE"},
                    {"service": "1Password", "status": "ACTIVE"},
                ],
            }
        )

    async def _metrics(self, _context: _Context) -> web.StreamResponse:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE})


def query_bool(query: Mapping[str, str], name: str, *, default: bool = False) -> bool:
    """A boolean query parameter: ``true`` or ``false`` (any case); absent is ``default``.

    Every boolean parameter goes through here, so each refuses anything else, an empty
    value (``?inline_files=``, ``?inline_files``) included, with the same 400.
    """
    raw = query.get(name)
    if raw is None:
        return default
    value = BOOLEANS.get(raw.lower())
    if value is None:
        raise ApiError(400, f"Invalid {name}: must be true or false")
    return value


def query_int(query: Mapping[str, str], name: str, *, default: int) -> int:
    """A non-negative integer query parameter (ASCII digits only); absent is ``default``.

    Every integer parameter goes through here: an empty value, a sign, a fraction,
    spaces, ``null``, non-ASCII digits or a value past 64 bits are the same 400.
    """
    raw = query.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or int(raw) > MAX_QUERY_INT:
        raise ApiError(400, f"Invalid {name}: must be an integer from 0 to {MAX_QUERY_INT}")
    return int(raw)


def _content_disposition(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace("\\", "_").replace('"', "_")
    header = f'attachment; filename="{ascii_name}"'
    if ascii_name != name:
        header += f"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
    return header
