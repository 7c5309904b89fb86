"""Which Connect server each owner reads with: the operator's own, or a connection object's.

Why this module exists: with ``OnePasswordConnection`` and ``ClusterOnePasswordConnection``
(:mod:`opsync.core.connection`) one operator reads from several Connect servers with several
tokens. :class:`Connections` stands where the one poller stood: the handlers track, forget and
record owners through it, and each sync asks it for the owner's :class:`~opsync.sync.resolve.Channel`
(:meth:`Connections.route`), which refuses, before any request to Connect, an owner that may not
use the connection it names.

* **One client and one poller per connection in use** (a :class:`Link`): created when the first
  owner routes to it, stopped and closed when the last one goes. Its poll is the version-gated poll
  of :class:`~opsync.sync.poller.Poller`: one ``GET /v1/vaults`` per interval when nothing changed.
* **Read before every poll** (Kubernetes reads, no Connect request): the connection object (deleted,
  changed host or TLS: its owners are re-routed), its token Secret (a rotated token is used from
  that poll on, no restart) and, for a cluster connection with a selector, the labels of the
  namespaces it serves (a namespace no longer allowed is refused at once; its Secrets stay).
* **Owners not served** (no connection named and the default switched off, a connection missing,
  not allowed, its token missing) are *parked*: their status says why, their Secrets are left as
  they are, and every polling interval they are tried again (Kubernetes reads only), so a
  connection created or a namespace relabelled later takes effect within one interval.
* **Isolation**: a namespaced connection serves its own namespace only (checked on the reference,
  so another namespace's connection and token are never even read); a token Secret is read only
  for a connection that names it; token values stay in ``SecretStr`` and the client's header.

Without any connection object nothing changes: owners without ``connectionRef`` go to the
operator's own poller, exactly as before, and the connection CRDs need not be installed (reading a
connection then answers 404, which the owners naming one report as ``ConnectionNotFound``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretBytes, SecretStr

from opsync.connect.client import ConnectClient
from opsync.connect.config import ConnectConfig
from opsync.connect.models import FullItem, Item, Vault
from opsync.core import connection as conn
from opsync.core.connection import ClusterConnectionSpec, ConnectionRef
from opsync.core.desired import ObjectRef
from opsync.core.errors import ConfigError, ConnectError, ConnectionUnusable, KubeError, Reason, SpecError
from opsync.kube import KubeApi
from opsync.ops.metrics import Metrics
from opsync.sync.poller import Outage, Poller, Result, Tracked
from opsync.sync.reconcile import Target
from opsync.sync.resolve import Channel

logger = logging.getLogger(__name__)

SyncFn = Callable[[Target, Mapping[str, Any] | None], Awaitable[None]]
"""The shared sync path (route, sync, report), for owners re-routed outside a handler."""
PollerFactory = Callable[["Link"], Poller]
OutageReporter = Callable[[Outage | None, Sequence[Tracked]], Awaitable[None]]


class Reopening(Exception):
    """A connection's host or TLS settings changed: its poll stops here, its client is closed, and
    its items are routed afresh (a new client) at the next round; no outage is reported."""


FIRST_POLL_AFTER = 3.0
"""Seconds from opening a connection to its first poll (then every interval)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """What a connection's client is built from, token aside (a change rebuilds the client)."""

    host: str
    ca_pem: str | None
    tls_verify: bool


@dataclass(eq=False, kw_only=True)
class Link:
    """One connection in use: its object as last read, its client, its poller and its task."""

    ref: ConnectionRef
    endpoint: Endpoint
    token: SecretStr = field(repr=False)
    client: ConnectClient
    channel: Channel
    body: Mapping[str, Any]
    """The connection object as last read (spec, status, metadata)."""
    spec: conn.AnySpec
    interval: float
    poller: Poller | None = None
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    admitted: dict[str, bool] = field(default_factory=dict)
    """Namespaces checked against a cluster connection's selector since its last read."""

    @property
    def label(self) -> str:
        return self.ref.label


class Connections:
    """Routes each owner to its connection's poller and channel; runs the connections in use."""

    def __init__(
        self,
        *,
        kube: KubeApi,
        metrics: Metrics,
        default: Poller,
        default_enabled: bool,
        base_config: ConnectConfig | None,
        interval: float,
        make_poller: PollerFactory,
        report_outage: OutageReporter,
        sync: SyncFn,
        observer: Callable[[str, str, str, float], None] | None = None,
    ) -> None:
        self.kube = kube
        self.metrics = metrics
        self.default = default
        self.default_enabled = default_enabled
        self._base = base_config
        self.interval = interval
        self._make_poller = make_poller
        self._report_outage = report_outage
        self._sync = sync
        self._observer = observer
        self._links: dict[ConnectionRef, Link] = {}
        self._parked: dict[str, Tracked] = {}
        self._opening: dict[ConnectionRef, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._random = random.Random()  # jitter only

    # -- the poller's interface, across every connection -----------------------------------------

    def _pollers(self) -> Iterator[Poller]:
        yield self.default
        for link in list(self._links.values()):
            if link.poller is not None:
                yield link.poller

    def _holder(self, uid: str) -> Poller | None:
        for poller in self._pollers():
            if poller.tracked(uid) is not None:
                return poller
        return None

    def __len__(self) -> int:
        return sum(len(poller) for poller in self._pollers()) + len(self._parked)

    def track(self, target: Target, body: Mapping[str, Any] | None = None) -> None:
        """Add or refresh an owner: in the poller of the connection serving it, else parked."""
        uid = target.owner.uid
        wanted = self._serving(target)
        holder = self._holder(uid)
        if holder is not None and holder is not wanted:
            self._drop(holder, uid)
            holder = None
        if wanted is None:
            entry = self._parked.get(uid)
            if entry is None or entry.target.item_paths != target.item_paths:
                entry = self._parked[uid] = Tracked(target)
            entry.target, entry.body = target, body
            return
        self._parked.pop(uid, None)
        wanted.track(target, body)

    def _serving(self, target: Target) -> Poller | None:
        """The poller that serves ``target`` now without asking anything, or None (parked: a sync
        routes it, or says why not)."""
        ref = target.connection
        if ref is None:
            return self.default if self.default_enabled else None
        link = self._links.get(ref)
        if link is None or conn.cross_namespace_refusal(ref, target.namespace) is not None:
            return None
        if link.admitted.get(target.namespace) is False or not self._plainly_admits(link, target.namespace):
            return None
        return link.poller

    @staticmethod
    def _plainly_admits(link: Link, namespace: str) -> bool:
        if not isinstance(link.spec, ClusterConnectionSpec):
            return True
        return bool(link.admitted.get(namespace)) or namespace in (link.spec.namespaces or [])

    def forget(self, owner_uid: str) -> None:
        self._parked.pop(owner_uid, None)
        holder = self._holder(owner_uid)
        if holder is not None:
            self._drop(holder, owner_uid)

    def _drop(self, poller: Poller, uid: str) -> None:
        poller.forget(uid)
        if poller is self.default or len(poller):
            return
        for link in list(self._links.values()):
            if link.poller is poller:
                self._release(link, "no item uses it any more")

    def record(self, target: Target, result: Result) -> None:
        holder = self._holder(target.owner.uid)
        if holder is not None:
            holder.record(target, result)

    def tracked(self, owner_uid: str) -> Tracked | None:
        holder = self._holder(owner_uid)
        return holder.tracked(owner_uid) if holder is not None else self._parked.get(owner_uid)

    def entries(self) -> list[Tracked]:
        return [entry for poller in self._pollers() for entry in poller.entries()] + list(
            self._parked.values()
        )

    # -- routing ---------------------------------------------------------------------------------

    async def route(self, target: Target) -> Channel:
        """The channel ``target`` reads with, its entry moved to that connection's poller; raises
        (SpecError, ConnectionUnusable, KubeError) with the reason when it may not, parking it."""
        try:
            link = await self._admit(target)
        except BaseException:
            self._park(target)
            raise
        if link is None:
            return self.default.channel
        uid = target.owner.uid
        assert link.poller is not None
        if link.poller.tracked(uid) is None:
            entry = self._parked.pop(uid, None) or self._detach(uid)
            link.poller.track(target, entry.body if entry is not None else None)
        return link.channel

    async def _admit(self, target: Target) -> Link | None:
        ref = target.connection
        if ref is None:
            if self.default_enabled:
                return None
            raise SpecError(
                "this item names no connection and the operator's default connection is switched off "
                "(--default-connection=false): set spec.connectionRef to a OnePasswordConnection of "
                f"namespace {target.namespace}, or a ClusterOnePasswordConnection that allows it",
                reason=Reason.NoConnection,
            )
        refusal = conn.cross_namespace_refusal(ref, target.namespace)
        if refusal is not None:
            raise SpecError(refusal, reason=Reason.ConnectionNotAllowed)
        link = await self._open(ref)
        if not await self._admits(link, target.namespace):
            raise SpecError(
                conn.not_allowed_message(ref, target.namespace), reason=Reason.ConnectionNotAllowed
            )
        return link

    def _detach(self, uid: str) -> Tracked | None:
        holder = self._holder(uid)
        if holder is None:
            return None
        entry = holder.tracked(uid)
        self._drop(holder, uid)
        return entry

    def _park(self, target: Target) -> None:
        uid = target.owner.uid
        if uid in self._parked:
            return
        entry = self._detach(uid)
        if entry is None:
            return  # not tracked (deleted meanwhile): nothing to keep
        self._parked[uid] = Tracked(target, entry.body)

    async def _admits(self, link: Link, namespace: str) -> bool:
        spec = link.spec
        if not isinstance(spec, ClusterConnectionSpec):
            return True
        known = link.admitted.get(namespace)
        if known is not None:
            return known
        labels = await self.kube.namespace_labels(namespace) if conn.needs_labels(spec, namespace) else None
        allowed = link.admitted[namespace] = conn.namespace_allowed(spec, namespace, labels)
        return allowed

    # -- opening, refreshing and closing connections ---------------------------------------------

    async def _read(self, ref: ConnectionRef) -> dict[str, Any]:
        if ref.cluster:
            body = await self.kube.read_cluster_connection(ref.name)
        else:
            assert ref.namespace is not None
            body = await self.kube.read_connection(ref.namespace, ref.name)
        if body is None:
            raise SpecError(
                f"no {ref}: create it, or fix spec.connectionRef (if it exists, check that the "
                "opsync.io CRDs are installed and that opsync may read it)",
                reason=Reason.ConnectionNotFound,
            )
        return body

    async def _secret_value(
        self, ref: ConnectionRef, namespace: str, key_ref: conn.SecretKeyRef, what: str
    ) -> bytes:
        secret = await self.kube.read_secret(namespace, key_ref.name)
        value = secret.data.get(key_ref.key) if secret is not None else None
        if not value:
            missing = "has no Secret" if secret is None else f"has a Secret {key_ref.name} without key"
            raise ConnectionUnusable(
                f"{ref}: the {what} is missing: namespace {namespace} {missing} "
                f"{key_ref.name if secret is None else repr(key_ref.key)}; create it as "
                f"spec.{'tokenSecretRef' if what == 'token' else 'caSecretRef'} names it",
                reason=Reason.TokenNotFound,
            )
        return value

    async def _materials(
        self, ref: ConnectionRef, body: Mapping[str, Any]
    ) -> tuple[conn.AnySpec, Endpoint, SecretStr]:
        """The connection's spec, endpoint and token, read now; ConnectionUnusable when it cannot be used."""
        spec, problem = conn.parse(ref.kind, body)
        if spec is None:
            raise ConnectionUnusable(f"{ref}: {problem}", reason=Reason.InvalidSpec)
        home = getattr(spec.tokenSecretRef, "namespace", None) or ref.namespace or ""
        token = await self._secret_value(ref, home, spec.tokenSecretRef, "token")
        ca_pem = None
        if spec.caSecretRef is not None:
            ca_home = getattr(spec.caSecretRef, "namespace", None) or ref.namespace or ""
            ca_pem = (await self._secret_value(ref, ca_home, spec.caSecretRef, "CA certificates")).decode(
                "utf-8", "replace"
            )
        endpoint = Endpoint(host=spec.host, ca_pem=ca_pem, tls_verify=spec.tlsVerify is not False)
        try:
            text = token.decode("utf-8").strip()
        except UnicodeDecodeError:
            text = ""
        return spec, endpoint, SecretStr(text)

    def _config(self, endpoint: Endpoint, token: SecretStr, ref: ConnectionRef) -> ConnectConfig:
        base = self._base
        tuning: dict[str, Any] = {}
        if base is not None:
            tuning = {
                name: getattr(base, name)
                for name in (
                    "timeout",
                    "connect_timeout",
                    "max_connections",
                    "max_concurrency",
                    "file_concurrency",
                    "max_retries",
                    "forbidden_retries",
                    "backoff_initial",
                    "backoff_max",
                    "retry_after_max",
                )
            }
        try:
            return ConnectConfig(
                host=endpoint.host,
                token=token,
                ca_pem=endpoint.ca_pem,
                tls_verify=endpoint.tls_verify,
                **tuning,
            )
        except ConfigError as exc:
            # The message names fields, never the token's value (hide_input_in_errors).
            raise ConnectionUnusable(f"{ref}: {exc}", reason=Reason.InvalidSpec) from None

    async def _open(self, ref: ConnectionRef) -> Link:
        link = self._links.get(ref)
        if link is not None:
            return link
        async with self._opening.setdefault(ref, asyncio.Lock()):
            link = self._links.get(ref)
            if link is not None:
                return link
            body = await self._read(ref)
            try:
                spec, endpoint, token = await self._materials(ref, body)
                config = self._config(endpoint, token, ref)
            except ConnectionUnusable as exc:
                await self._report(ref, body, ready=False, reason=exc.reason, message=str(exc))
                raise
            client = self._client(config, ref)
            link = Link(
                ref=ref,
                endpoint=endpoint,
                token=token,
                client=client,
                channel=Channel.of(client),
                body=body,
                spec=spec,
                interval=float(spec.pollingInterval or self.interval),
            )
            link.poller = self._make_poller(link)
            link.task = asyncio.create_task(self._run_link(link), name=f"opsync poller {ref.label}")
            self._links[ref] = link
            logger.info("%s in use: polling %s every %ss", ref, endpoint.host, link.interval)
            return link

    def _client(self, config: ConnectConfig, ref: ConnectionRef) -> ConnectClient:
        label = ref.label
        observer = self._observer
        metrics = self.metrics

        def observe(method: str, endpoint: str, status: str, seconds: float) -> None:
            if observer is not None:
                observer(method, endpoint, status, seconds)
            metrics.connection_request(label, status)

        return ConnectClient(config, observer=observe)

    async def reread_token(self, target: Target) -> None:
        """Connect refused the token of ``target``'s connection (401) in a sync: read its Secret
        again now, so that kopf's retry uses a token rotated since the last poll."""
        link = self._links.get(target.connection) if target.connection is not None else None
        if link is None:
            return
        try:
            _, endpoint, token = await self._materials(link.ref, link.body)
        except (ConnectionUnusable, KubeError) as exc:
            logger.debug("%s: could not read its token again: %s", link.ref, exc)
            return
        if endpoint == link.endpoint:
            with contextlib.suppress(ConfigError):  # the next poll's refresh reports it
                _use_token(link, token)

    async def refresh(self, link: Link) -> None:
        """Before each poll of ``link``: read its object and token again (Kubernetes only) and
        re-check the namespaces it serves; raise ConnectionUnusable when it cannot poll now."""
        ref = link.ref
        try:
            body = await self._read(ref)
        except SpecError as exc:
            raise ConnectionUnusable(
                f"{exc}. The Secrets synced through it are kept as they are", reason=Reason.ConnectionNotFound
            ) from None
        spec, endpoint, token = await self._materials(ref, body)
        link.body = body
        if endpoint != link.endpoint:
            logger.info("%s changed its host or TLS settings: its items are routed afresh", ref)
            self._release(link, "its host or TLS settings changed", reroute=True)
            raise Reopening(str(ref))
        try:
            _use_token(link, token)
        except ConfigError as exc:
            raise ConnectionUnusable(f"{ref}: {exc}", reason=Reason.TokenNotFound) from None
        link.spec = spec
        link.interval = float(spec.pollingInterval or self.interval)
        if isinstance(spec, ClusterConnectionSpec):
            link.admitted.clear()
            await self._recheck(link)

    async def _recheck(self, link: Link) -> None:
        """Refuse, now, the owners of a cluster connection whose namespace it no longer allows."""
        assert link.poller is not None
        refused = [
            entry for entry in link.poller.entries() if not await self._admits(link, entry.target.namespace)
        ]
        for entry in refused:
            logger.info(
                "%s no longer allows namespace %s: %s/%s refused, its Secret kept",
                link.ref,
                entry.target.namespace,
                entry.target.namespace,
                entry.target.owner.name,
            )
            self._park(entry.target)
            await self._sync(entry.target, entry.body)  # reports ConnectionNotAllowed

    async def _run_link(self, link: Link) -> None:
        """Poll ``link`` every interval (± 10 %) until it is released."""
        poller = link.poller
        assert poller is not None
        first = True
        while not link.stop.is_set():
            delay = link.interval * (1 + self._random.uniform(-0.1, 0.1))
            if first:  # the connection's status (Ready, vaults) soon after it is first used
                delay, first = min(delay, FIRST_POLL_AFTER), False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.stop.wait(), delay)
            if link.stop.is_set():
                return
            ok = False
            try:
                await poller.poll_once()
                ok = True
            except Reopening:
                return  # released: its items are opened afresh at the next round
            except (ConnectError, ConnectionUnusable) as exc:
                logger.warning("poll of %s failed: %s; next poll in about %ss", link.ref, exc, link.interval)
            except KubeError as exc:
                logger.warning("poll of %s: could not read it: %s", link.ref, exc)
            except Exception:
                logger.exception("poll of %s failed unexpectedly", link.ref)
            self.metrics.connection_poll(link.label, ok, len(poller))
            if ok and not link.stop.is_set():
                await self._report(
                    link.ref,
                    link.body,
                    ready=True,
                    reason=Reason.Connected,
                    message=f"Connect at {link.endpoint.host} answers; {len(poller.vaults)} vault(s) visible",
                    vaults=poller.vaults,
                )

    async def on_outage(self, link: Link, outage: Outage | None) -> None:
        """A link's poller began failing (or answers again): its items and the connection say so."""
        if outage is not None:
            await self._report(
                link.ref, link.body, ready=False, reason=outage.reason, message=outage.describe()
            )
        assert link.poller is not None
        await self._report_outage(outage, link.poller.entries())

    def _release(self, link: Link, why: str, *, reroute: bool = False) -> None:
        """Stop polling ``link`` and close its client; with ``reroute`` its owners are parked (and
        routed afresh at the next round)."""
        if self._links.get(link.ref) is not link:
            return
        del self._links[link.ref]
        link.stop.set()
        if reroute and link.poller is not None:
            for entry in link.poller.entries():
                self._parked[entry.target.owner.uid] = Tracked(entry.target, entry.body)
        logger.info("%s no longer polled: %s", link.ref, why)
        self.metrics.forget_connection(link.label)
        task = asyncio.get_running_loop().create_task(link.client.aclose(), name=f"close {link.label}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- the parked owners -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Every polling interval until ``stop``: try the parked owners again (Kubernetes reads
        only; a connection that now serves one syncs it at once)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            if stop.is_set():
                break
            try:
                await self.retry_parked()
            except Exception:
                logger.exception("retrying the items waiting for a connection failed unexpectedly")
        for link in list(self._links.values()):
            self._release(link, "the operator stops")
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task

    async def retry_parked(self) -> None:
        by_ref: dict[ConnectionRef, list[Tracked]] = {}
        for entry in list(self._parked.values()):
            ref = entry.target.connection
            if ref is None:
                continue  # no connection named: waits for the item to change (or the default)
            by_ref.setdefault(ref, []).append(entry)
        for ref, entries in by_ref.items():
            link = self._links.get(ref)
            if link is not None:
                link.admitted.clear()
            elif not ref.cluster and all(
                conn.cross_namespace_refusal(ref, e.target.namespace) for e in entries
            ):
                continue  # refused on the reference alone: nothing new to learn
            else:
                try:
                    await self._open(ref)
                except (SpecError, ConnectionUnusable, KubeError) as exc:
                    logger.debug("%s still unusable: %s", ref, exc)
                    continue
            for entry in entries:
                if self._parked.get(entry.target.owner.uid) is entry:
                    await self._sync(entry.target, entry.body)

    # -- the connection's status -----------------------------------------------------------------

    async def _report(
        self,
        ref: ConnectionRef,
        body: Mapping[str, Any],
        *,
        ready: bool,
        reason: Reason,
        message: str,
        vaults: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        meta = body.get("metadata") or {}
        current = body.get("status")
        status = conn.connection_status(
            current,
            ready=ready,
            reason=reason,
            message=message,
            generation=meta.get("generation"),
            now=_now(),
            vaults=vaults,
        )
        if status is None:
            return
        changed = conn.transition(current, ready=ready, reason=reason)
        try:
            if ref.cluster:
                await self.kube.patch_cluster_connection_status(ref.name, status)
            else:
                assert ref.namespace is not None
                await self.kube.patch_connection_status(ref.namespace, ref.name, status)
        except KubeError as exc:
            logger.warning("could not update the status of %s: %s", ref, exc)
            return
        if isinstance(body, dict):
            body["status"] = {**dict(current or {}), **status}
        if changed:
            (logger.info if ready else logger.warning)("%s: %s (%s)", ref, message, reason)
            if not ref.cluster and ref.namespace is not None:  # a cluster object's Events have no namespace
                target = ObjectRef(
                    conn.API_VERSION, ref.kind, ref.namespace, ref.name, str(meta.get("uid", ""))
                )
                try:
                    await self.kube.post_event(
                        target, type_="Normal" if ready else "Warning", reason=reason, message=message
                    )
                except KubeError as exc:
                    logger.warning("could not post an Event on %s: %s", ref, exc)


class NoDefaultConnection:
    """The operator's own connection when it is switched off and ``OP_CONNECT_HOST`` is not set:
    an :class:`~opsync.sync.ports.ItemSource` that refuses every read (routing never reaches it)."""

    def _refuse(self) -> SpecError:
        return SpecError(
            "the operator's default connection is switched off: name a connection in spec.connectionRef",
            reason=Reason.NoConnection,
        )

    async def list_vaults(self) -> list[Vault]:
        raise self._refuse()

    async def find_vaults(self, title: str) -> list[Vault]:
        raise self._refuse()

    async def list_items(self, vault_id: str) -> list[Item]:
        raise self._refuse()

    async def find_items(self, vault_id: str, title: str) -> list[Item]:
        raise self._refuse()

    async def get_item(self, vault_id: str, item_id: str) -> FullItem:
        raise self._refuse()

    async def get_item_with_files(
        self, vault_id: str, item_id: str, *, item: FullItem | None = None
    ) -> tuple[FullItem, dict[str, SecretBytes]]:
        raise self._refuse()


def _use_token(link: Link, token: SecretStr) -> None:
    """Use ``token`` for ``link`` from its next request on, when it is not the one in use; a
    ConfigError (which names no value) when it cannot be a bearer token."""
    if token.get_secret_value() == link.token.get_secret_value():
        return
    link.client.set_token(token)
    link.token = token
    logger.info("%s: the token in its Secret changed; using the new one", link.ref)
