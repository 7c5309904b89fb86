"""``ConnectServer``: the local Connect server as an object tests, demos and the CLI start and stop.

Why this module exists: everything that needs a Connect server (the client's
tests, the operator's tests, ``make run``, benchmarks) starts this one, in
process, on a free loopback port, and reaches into it: tokens, fault switches,
request counts and the live store.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from opsync.tooling.connectserver.activity import ActivityLog
from opsync.tooling.connectserver.app import MAX_BODY_SIZE, ConnectApi, ServerOptions
from opsync.tooling.connectserver.faults import FaultConfig, FaultInjector
from opsync.tooling.connectserver.metrics import ServerMetrics
from opsync.tooling.connectserver.protocol import ConnectHttpServer
from opsync.tooling.connectserver.store import Store
from opsync.tooling.connectserver.tokens import Access, TokenAuthority, TokenClaims, parse_scope

SHUTDOWN_TIMEOUT = 2.0
"""Seconds ``stop()`` waits for requests still being served."""


def authority_for(store: Store) -> TokenAuthority:
    identity = store.identity
    return TokenAuthority(
        identity.signing_key.get_secret_value(), server_id=identity.id, account=identity.account
    )


def issue_token(store: Store, vaults: Sequence[str], *, expires_in: float | None = None) -> str:
    """A token for these vaults (``"Name"``, ``"Name,r"``, ``"id,w"``), signed with the store's key."""
    if isinstance(vaults, str):
        raise TypeError("pass a list of vault scopes, not a single string")
    scopes: dict[str, Access] = {}
    for spec in vaults:
        name, access = parse_scope(spec)
        vault_id = store.resolve_vault_id(name)
        scopes[vault_id] = scopes.get(vault_id, Access.NONE) | access
    return authority_for(store).issue(scopes, expires_in=expires_in)


class ConnectServer:
    """A wire-compatible 1Password Connect server serving (and persisting to) one YAML data file.

    Use it as an async context manager::

        async with ConnectServer(path) as server:
            token = server.issue_token(["Kubernetes", "Platform,r"])
            ...  # HTTP against server.url

    Starting from a plain dict: ``ConnectServer.from_data(data, tmp_dir)`` writes the
    dict as YAML to a new file in ``tmp_dir`` (the dict has the data-file shape,
    ``{"vaults": [...]}``; file content may be given as ``content: b"..."``) and
    returns a server for it, not yet started.

    ``faults`` is the live :class:`FaultConfig` (change its attributes at any time);
    ``store`` is the live :class:`Store` (its async methods change items the way an
    app edit would, persisted like API writes); ``activity`` is the activity log;
    ``request_count()`` reads the request counter that ``/metrics`` exposes.
    """

    def __init__(
        self,
        data_path: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultConfig | None = None,
        options: ServerOptions | None = None,
    ) -> None:
        self.data_path = Path(data_path)
        self.host = host
        self.port = port
        self.options = options or ServerOptions()
        self._faults = faults or FaultConfig()
        self._faults.validate()
        self._injector = FaultInjector(self._faults)
        self.metrics = ServerMetrics()
        self.activity = ActivityLog(self.options.activity_capacity)
        self._store: Store | None = None
        self._authority: TokenAuthority | None = None
        self._runner: web.ServerRunner | None = None
        self._url: str | None = None

    def __repr__(self) -> str:
        return f"ConnectServer(data_path={str(self.data_path)!r}, url={self._url!r})"

    @classmethod
    def from_data(
        cls,
        data: Mapping[str, Any],
        tmp_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultConfig | None = None,
        options: ServerOptions | None = None,
    ) -> ConnectServer:
        """A server for ``data`` (data-file shape), written to a new YAML file in ``tmp_dir``."""
        Path(tmp_dir).mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=tmp_dir, prefix="connect-data-", suffix=".yaml")
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            yaml.safe_dump(dict(data), handle, sort_keys=False, allow_unicode=True)
        return cls(Path(name), host=host, port=port, faults=faults, options=options)

    # ------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load the data file (raises ``DataFileError`` naming line and key if invalid) and listen."""
        if self._runner is not None:
            raise RuntimeError("the server is already running")
        store = await asyncio.to_thread(Store.open, self.data_path)
        authority = authority_for(store)
        api = ConnectApi(
            store=store,
            authority=authority,
            injector=self._injector,
            metrics=self.metrics,
            activity=self.activity,
            options=self.options,
        )
        http_server = ConnectHttpServer(
            api.handle,
            connect_version=self.options.connect_version,
            client_max_size=MAX_BODY_SIZE,
            access_log=None,
        )
        runner = web.ServerRunner(http_server, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        address = runner.addresses[0]
        host = f"[{address[0]}]" if ":" in str(address[0]) else str(address[0])
        self._store, self._authority, self._runner = store, authority, runner
        self._url = f"http://{host}:{address[1]}"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        self._url = None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> ConnectServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---------------------------------------------------------------------------------------- access

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: no trailing slash, no ``/v1``."""
        if self._url is None:
            raise RuntimeError("the server is not running")
        return self._url

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the server has not been started")
        return self._store

    @property
    def faults(self) -> FaultConfig:
        return self._faults

    @faults.setter
    def faults(self, config: FaultConfig) -> None:
        config.validate()
        self._faults = config
        self._injector.config = config

    def issue_token(self, vaults: Sequence[str], *, expires_in: float | None = None) -> str:
        """A bearer token for these vaults: ``"Name"`` read+write, ``"Name,r"`` read only, ``"id,w"`` write only."""
        return issue_token(self.store, vaults, expires_in=expires_in)

    def verify_token(self, token: str) -> TokenClaims:
        """The claims of a token this server would accept (raises ``TokenError`` otherwise)."""
        if self._authority is None:
            raise RuntimeError("the server has not been started")
        return self._authority.verify(token)

    def request_count(
        self, endpoint: str | None = None, status: int | str | None = None, *, method: str | None = None
    ) -> int:
        """Requests served so far, from the counter ``/metrics`` exposes.

        ``endpoint`` is a route template (``"/v1/vaults/{vaultUuid}/items"``), optionally
        prefixed by the method (``"GET /v1/vaults"``); ``None`` means every endpoint.
        """
        if endpoint is not None and " " in endpoint:
            method, endpoint = endpoint.split(" ", 1)
        if endpoint is not None and endpoint != "/" and endpoint.endswith("/"):
            endpoint = endpoint.rstrip("/")
        return self.metrics.request_count(endpoint=endpoint, status=status, method=method)
