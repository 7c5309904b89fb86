"""Change detection: one poller per operator that asks Connect only what changed.

The official operator re-reads every item and re-downloads every file on
every poll (2+F requests per item by id, 4+F by title). opsync's poll is:

1. ``GET /v1/vaults`` once. A vault's ``contentVersion`` moves whenever one of
   its items changes, so vaults whose version stayed put need nothing more;
2. for each vault that moved and that a tracked target uses, list its items
   once, and compare each target's item ``version`` with the one last synced;
3. read (with files) only the items whose version moved, once per item
   however many targets use it, and sync those targets through the same write
   path as a reconcile (hash-gated writes, ownership checks, status, Events).

An idle poll is one request. Title references are resolved once and then
checked against each listing for free: a rename, a deletion, or an older
duplicate appearing sends the target back to full resolution. Targets that
failed transiently retry every poll; those that failed permanently (no such
item, …) retry when some vault changed. Every ``full_resync_every`` polls all
vaults in use are listed whatever their ``contentVersion``, which guards
against a server that misses a bump.

No kopf here: the handlers feed :meth:`Poller.track` / :meth:`Poller.forget`
and give the poller the shared sync path as a callable.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from opsync.connect.models import Item, Vault
from opsync.core.errors import (
    ConnectError,
    ConnectionUnusable,
    ConnectTransientError,
    RateLimited,
    Reason,
    SpecError,
    Unauthorized,
)
from opsync.core.itempath import Fetched, ItemPath, pick, pick_vault
from opsync.sync.ports import ItemSource
from opsync.sync.reconcile import Failure, Outcome, Reconciler, Target
from opsync.sync.resolve import Channel, fetch_resolved

logger = logging.getLogger(__name__)

State = Literal["new", "ok", "transient", "permanent"]
Result = Outcome | Failure
SyncFn = Callable[[Target, Mapping[str, Any] | None, Sequence[Fetched] | None], Awaitable[Result]]
AfterPollFn = Callable[[Sequence[tuple[Target, Outcome]]], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class Outage:
    """Connect failing the polls: since when, why, and when it last answered."""

    reason: Reason
    message: str
    since: str
    """When the first failed poll ended (RFC 3339, UTC)."""
    last_ok: str | None
    """When a poll last succeeded (RFC 3339, UTC); None if none has since the start."""
    via: str = "Connect"
    """What fails: Connect, or the connection object whose Connect it is."""

    def describe(self) -> str:
        checked = f"last successful check {self.last_ok}" if self.last_ok else "no successful check yet"
        return (
            f"{self.via} failing since {self.since} ({self.message}); {checked}. The Secret holds the "
            "item as last synced; changes in 1Password reach it once Connect answers again"
        )


OutageFn = Callable[[Outage | None], Awaitable[None]]
"""Told when an outage begins (an Outage) and when it ends (None)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _outage_reason(exc: ConnectError | ConnectionUnusable) -> Reason:
    if isinstance(exc, ConnectionUnusable):
        return exc.reason
    if isinstance(exc, Unauthorized):
        return Reason.Unauthorized
    if isinstance(exc, RateLimited):
        return Reason.RateLimited
    if isinstance(exc, ConnectTransientError):
        return Reason.ConnectUnavailable
    return Reason.ConnectError


@dataclass(eq=False)
class Tracked:
    """One owner (a OnePasswordItem or an annotated Deployment) the poller keeps in sync."""

    target: Target
    body: Mapping[str, Any] | None = None
    paths: tuple[ItemPath, ...] = ()
    """The target's item paths, in order; empty when they cannot be used (waits for a change)."""
    resolved: tuple[ItemPath, ...] = ()
    """The same paths as ids, as last synced; empty until then."""
    versions: tuple[int, ...] = ()
    fetched: tuple[Fetched, ...] = field(default=(), repr=False)
    """The items as last read, kept for a target of several items only: when one of them
    changes, the others need not be read again."""
    state: State = "new"

    @property
    def synced(self) -> bool:
        return bool(self.paths) and len(self.resolved) == len(self.paths)


@dataclass
class PollReport:
    """What one poll did (for logs, metrics and tests)."""

    full: bool = False
    vaults_changed: int = 0
    vaults_listed: int = 0
    checked: int = 0
    fetched: int = 0
    synced: list[tuple[Target, Result]] = field(default_factory=list)


class Poller:
    """Tracks targets and polls Connect for changes to their items."""

    def __init__(
        self,
        reconciler: Reconciler,
        sync: SyncFn,
        *,
        interval: float,
        full_resync_every: int = 24,
        jitter: float = 0.1,
        after_poll: AfterPollFn | None = None,
        on_poll: Callable[[PollReport, float, bool], None] | None = None,
        on_outage: OutageFn | None = None,
        channel: Channel | None = None,
        before_poll: Callable[[], Awaitable[None]] | None = None,
        via: str = "Connect",
    ) -> None:
        self.reconciler = reconciler
        self.channel = channel or reconciler.channel
        """The connection polled: the operator's own, or a OnePasswordConnection's."""
        self.connect: ItemSource = self.channel.connect
        self._before_poll = before_poll
        self._via = via
        self.vaults: list[tuple[str, str]] = []
        """The vaults (id, name) the last successful poll saw."""
        self._sync = sync
        self.interval = interval
        self.full_resync_every = max(1, full_resync_every)
        self.jitter = jitter
        self._after_poll = after_poll
        self._on_poll = on_poll
        self._on_outage = on_outage
        self.outage: Outage | None = None
        """Connect failing the polls now, or None."""
        self._last_ok: str | None = None
        self._tracked: dict[str, Tracked] = {}
        self._vault_versions: dict[str, int | None] = {}
        self._polls = 0
        self._poll_lock = asyncio.Lock()
        self._random = random.Random()  # jitter only

    # -- what to poll ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tracked)

    def track(self, target: Target, body: Mapping[str, Any] | None = None) -> None:
        """Add or refresh a target (keyed by its owner's uid); a new item path starts it afresh."""
        uid = target.owner.uid
        entry = self._tracked.get(uid)
        if entry is None or entry.target.item_paths != target.item_paths or entry.target.key != target.key:
            entry = Tracked(target)
            try:
                if target.spec_error is None:
                    entry.paths = tuple(ItemPath.parse(path) for path in target.item_paths)
            except SpecError:
                pass  # reported by the reconcile; waits for the owner to change
            self._tracked[uid] = entry
        entry.target = target
        entry.body = body

    def forget(self, owner_uid: str) -> None:
        self._tracked.pop(owner_uid, None)

    def record(self, target: Target, result: Result) -> None:
        """Remember what a sync of ``target`` found, whoever ran it (a handler or the poller)."""
        entry = self._tracked.get(target.owner.uid)
        if entry is None or entry.target.item_paths != target.item_paths:
            return
        if isinstance(result, Outcome):
            items = result.items or ((result.resolved_path, result.item_version),)
            entry.resolved = tuple(ItemPath.parse(path) for path, _ in items)
            entry.versions = tuple(version for _, version in items)
            entry.fetched = result.fetched if len(items) > 1 else ()
            entry.state = "ok"
        else:
            entry.state = "transient" if result.retryable else "permanent"

    def tracked(self, owner_uid: str) -> Tracked | None:
        return self._tracked.get(owner_uid)

    def entries(self) -> list[Tracked]:
        """Every tracked target (a copy: the list may change while its reader awaits)."""
        return list(self._tracked.values())

    # -- polling ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``interval`` seconds (± jitter) until ``stop``; polls never overlap."""
        while not stop.is_set():
            delay = self.interval * (1 + self._random.uniform(-self.jitter, self.jitter))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            try:
                await self.poll_once()
            except (ConnectError, ConnectionUnusable) as exc:
                logger.warning("poll failed: %s; next poll in about %ss", exc, self.interval)
            except Exception:
                logger.exception("poll failed unexpectedly")

    async def poll_once(self, *, full: bool | None = None) -> PollReport:
        async with self._poll_lock:
            self._polls += 1
            if full is None:
                full = self._polls % self.full_resync_every == 0
            started = time.monotonic()
            ok = False
            report = PollReport(full=full)
            try:
                if self._before_poll is not None:
                    await self._before_poll()
                await self._poll(report)
                ok = True
            except (ConnectError, ConnectionUnusable) as exc:
                await self._connect_failed(exc)
                raise
            finally:
                if self._on_poll is not None:
                    self._on_poll(report, time.monotonic() - started, ok)
            await self._connect_answered()
            return report

    async def _connect_failed(self, exc: ConnectError | ConnectionUnusable) -> None:
        """A poll met a Connect failure: the first one begins an outage (reported once)."""
        if self.outage is not None:
            return
        self.outage = Outage(
            reason=_outage_reason(exc), message=str(exc), since=_now(), last_ok=self._last_ok, via=self._via
        )
        if self._on_outage is not None:
            await self._on_outage(self.outage)

    async def _connect_answered(self) -> None:
        self._last_ok = _now()
        if self.outage is None:
            return
        self.outage = None
        if self._on_outage is not None:
            await self._on_outage(None)

    async def _poll(self, report: PollReport) -> None:
        vaults = await self.connect.list_vaults()
        self.vaults = [(vault.id, vault.name or "") for vault in vaults if vault.id]
        self.channel.listings.offer_vaults(vaults)
        by_id = {vault.id: vault for vault in vaults if vault.id}
        moved = {
            vault_id
            for vault_id, vault in by_id.items()
            if report.full or self._vault_versions.get(vault_id, -1) != vault.content_version
        }
        report.vaults_changed = len(moved)
        entries = list(self._tracked.values())
        to_resolve: list[Tracked] = []
        to_list: dict[str, list[Tracked]] = defaultdict(list)
        for entry in entries:
            if not entry.paths:
                continue
            if entry.state == "permanent" and (report.full or not entry.synced):
                if report.full or moved:  # e.g. the missing item may have appeared meanwhile
                    to_resolve.append(entry)
                continue
            if entry.state in ("new", "transient") or not entry.synced:
                to_resolve.append(entry)
                continue
            pairs = list(zip(entry.paths, entry.resolved, strict=True))
            if any(r.vault not in by_id or pick_vault(p.vault, vaults) != r.vault for p, r in pairs):
                to_resolve.append(entry)  # vault gone, renamed, or access lost: resolve says which
                continue
            for vault_id in sorted({r.vault for _, r in pairs} & moved):
                to_list[vault_id].append(entry)

        changes = Changes()
        for vault_id, users in to_list.items():
            items = await self.connect.list_items(vault_id)
            self.channel.listings.offer_items(vault_id, items)
            report.vaults_listed += 1
            changes.check(vault_id, users, vaults, items, report)
            self._vault_versions[vault_id] = by_id[vault_id].content_version
        for vault_id in moved - set(to_list):
            self._vault_versions[vault_id] = by_id[vault_id].content_version
        to_resolve += changes.stale

        read: dict[ItemPath, Fetched | None] = {}
        for resolved in changes.to_read():
            report.fetched += 1
            try:
                read[resolved] = await fetch_resolved(self.connect, resolved)
            except ConnectError as exc:
                logger.info("reading %s failed (%s); resolving its users afresh", resolved, exc)
                read[resolved] = None
        changed: list[tuple[Target, Outcome]] = []
        for entry, fetched in changes.compose(read):
            await self._run_sync(entry, fetched, report, changed)
        for entry in to_resolve:
            await self._run_sync(entry, None, report, changed)
        if changed and self._after_poll is not None:
            await self._after_poll(changed)

    async def _run_sync(
        self,
        entry: Tracked,
        fetched: Sequence[Fetched] | None,
        report: PollReport,
        changed: list[tuple[Target, Outcome]],
    ) -> None:
        target = entry.target
        try:
            result = await self._sync(target, entry.body, list(fetched) if fetched is not None else None)
        except Exception:  # e.g. a status write failed: the other targets still get their turn
            logger.exception("poll: syncing %s/%s failed", target.namespace, target.secret_name)
            return
        self.record(target, result)
        report.synced.append((target, result))
        if isinstance(result, Outcome) and result.data_changed:
            changed.append((target, result))


class Changes:
    """What the item listings of one poll say about the tracked targets."""

    def __init__(self) -> None:
        self.stale: list[Tracked] = []
        self._changed: dict[int, tuple[Tracked, set[int]]] = {}

    def check(
        self,
        vault_id: str,
        users: Sequence[Tracked],
        vaults: Sequence[Vault],
        items: Sequence[Item],
        report: PollReport,
    ) -> None:
        """Compare the targets' items in ``vault_id`` with its listing."""
        versions = {item.id: item.version for item in items if item.id}
        for entry in users:
            for index, (path, resolved) in enumerate(zip(entry.paths, entry.resolved, strict=True)):
                if resolved.vault != vault_id or entry in self.stale:
                    continue
                report.checked += 1
                if pick(path, vaults, items) != resolved:
                    self.stale.append(entry)  # deleted, renamed, or an older duplicate appeared
                    self._changed.pop(id(entry), None)
                elif entry.versions[index] != versions.get(resolved.item):
                    self._changed.setdefault(id(entry), (entry, set()))[1].add(index)

    def _indexes(self, entry: Tracked, changed: set[int]) -> set[int]:
        # Without the other items as last read (e.g. after a frozen sync), read them all again.
        if len(entry.paths) > 1 and len(entry.fetched) != len(entry.paths):
            return set(range(len(entry.paths)))
        return changed

    def to_read(self) -> list[ItemPath]:
        """Every item to read, once however many targets use it."""
        wanted = (
            entry.resolved[index]
            for entry, changed in self._changed.values()
            for index in sorted(self._indexes(entry, changed))
        )
        return list(dict.fromkeys(wanted))

    def compose(self, read: Mapping[ItemPath, Fetched | None]) -> list[tuple[Tracked, list[Fetched] | None]]:
        """Each changed target with its items: as just read where they changed, as last read
        elsewhere; None (resolve and read afresh) when a read failed."""
        out: list[tuple[Tracked, list[Fetched] | None]] = []
        for entry, changed in self._changed.values():
            indexes = self._indexes(entry, changed)
            parts = [
                read[resolved] if index in indexes else entry.fetched[index]
                for index, resolved in enumerate(entry.resolved)
            ]
            out.append((entry, None if any(part is None for part in parts) else [p for p in parts if p]))
        return out
