"""Leader election on a ``coordination.k8s.io/v1`` Lease, so that only one opsync replica acts.

Run several replicas for availability: one holds the Lease and runs kopf and
the poller; the others wait, ready to take over within one lease duration
when the leader stops renewing (or at once when it releases the Lease on a
clean shutdown). This is the protocol of client-go and controller-runtime
(which the official operator uses with ``--leader-elect``), so ``kubectl get
lease`` shows the holder as for any controller.

Why not kopf's peering: it pauses watch streams only (the poller is not a
watch and would run in every replica, which is the official operator's bug),
and replicas with equal priorities all pause.

Expiry is judged on this replica's clock: a Lease counts as held for
``duration`` seconds after this replica last saw its record change, so clock
skew between nodes cannot make two replicas lead at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opsync.core.errors import KubeError
from opsync.sync.ports import LeaseStore

logger = logging.getLogger(__name__)


def default_identity(pod_name: str = "") -> str:
    """The pod name (or host name) plus a random suffix: unique even for two processes on one host."""
    return f"{pod_name or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def default_lease_namespace(pod_namespace: str = "") -> str:
    """Where the Lease lives when not configured: the pod's own namespace, else ``default``."""
    if pod_namespace:
        return pod_namespace
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE) as file:
            return file.read().strip() or "default"
    except OSError:
        return "default"


def micro_time(moment: dt.datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease that leader election reads."""

    holder: str
    duration: float
    transitions: int
    acquire_time: str | None
    renew_time: str | None
    resource_version: str | None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> LeaseRecord:
        spec = body.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration=float(spec.get("leaseDurationSeconds") or 0),
            transitions=int(spec.get("leaseTransitions") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            resource_version=(body.get("metadata") or {}).get("resourceVersion"),
        )

    @property
    def fingerprint(self) -> tuple[str, str | None, str | None]:
        """What changes whenever the holder renews or the Lease changes hands."""
        return (self.holder, self.renew_time, self.resource_version)


def can_acquire(record: LeaseRecord, identity: str, *, observed_at: float, now: float) -> bool:
    """Whether ``identity`` may write itself into the Lease (pure; times on the local clock).

    Yes when it holds it already, when nobody holds it (released), or when its
    holder has not renewed for a whole lease duration as seen from here.
    """
    if record.holder in ("", identity):
        return True
    return observed_at + record.duration <= now


class LeaderElector:
    """Acquires, renews and releases one Lease for one identity."""

    def __init__(
        self,
        kube: LeaseStore,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not retry_period < renew_deadline < duration:
            raise ValueError("need retry_period < renew_deadline < duration")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock = clock
        self._observed: tuple[tuple[str, str | None, str | None], float] | None = None
        self._leading = False

    @property
    def leading(self) -> bool:
        return self._leading

    def _observe(self, record: LeaseRecord) -> float:
        """The local time at which the current record was first seen."""
        if self._observed is None or self._observed[0] != record.fingerprint:
            self._observed = (record.fingerprint, self._clock())
        return self._observed[1]

    def _body(self, previous: LeaseRecord | None, *, holder: str, duration: float) -> dict[str, Any]:
        now = micro_time(dt.datetime.now(dt.UTC))
        taking_over = previous is None or previous.holder != holder
        transitions = 0 if previous is None else previous.transitions + (1 if taking_over and holder else 0)
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if previous is not None and previous.resource_version:
            metadata["resourceVersion"] = previous.resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": max(1, round(duration)),
                "acquireTime": now if taking_over or previous is None else previous.acquire_time or now,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this identity holds the Lease afterwards."""
        body = await self.kube.read_lease(self.namespace, self.name)
        if body is None:
            try:
                await self.kube.create_lease(
                    self.namespace, self._body(None, holder=self.identity, duration=self.duration)
                )
            except KubeError as exc:
                if exc.status == 409:  # another replica created it first
                    return False
                raise
            return True
        record = LeaseRecord.from_body(body)
        observed_at = self._observe(record)
        if not can_acquire(record, self.identity, observed_at=observed_at, now=self._clock()):
            return False
        try:
            await self.kube.replace_lease(
                self.namespace, self._body(record, holder=self.identity, duration=self.duration)
            )
        except KubeError as exc:
            if exc.status == 409:  # someone else wrote it since we read it
                return False
            raise
        return True

    async def _attempt(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except KubeError as exc:
            # The API server not answering is logged once, by the Kubernetes layer; each attempt
            # that meets it only at DEBUG (losing the Lease over it is an ERROR in keep()).
            unreachable = exc.status is None and exc.retryable
            logger.log(
                logging.DEBUG if unreachable else logging.WARNING,
                "leader election on Lease %s/%s: %s",
                self.namespace,
                self.name,
                exc,
            )
            return False

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this replica leads (True) or ``stop`` is set (False)."""
        logger.info("waiting to lead: Lease %s/%s, identity %s", self.namespace, self.name, self.identity)
        announced = False
        while not stop.is_set():
            if await self._attempt():
                self._leading = True
                logger.info("leading: holding Lease %s/%s as %s", self.namespace, self.name, self.identity)
                return True
            if not announced and self._observed is not None:
                logger.info("standing by: another replica holds Lease %s/%s", self.namespace, self.name)
                announced = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.retry_period)
        return False

    async def keep(self, stop: asyncio.Event) -> bool:
        """Renew until ``stop`` is set (True) or renewal fails for ``renew_deadline`` (False: lost)."""
        last_renewed = self._clock()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.retry_period)
            if stop.is_set():
                return True
            if await self._attempt():
                last_renewed = self._clock()
            elif self._clock() - last_renewed >= self.renew_deadline:
                self._leading = False
                logger.error(
                    "lost Lease %s/%s: not renewed for %.0fs", self.namespace, self.name, self.renew_deadline
                )
                return False

    async def release(self) -> None:
        """Hand the Lease over at once (clean shutdown): clear the holder if it is still us."""
        if not self._leading:
            return
        self._leading = False
        try:
            body = await self.kube.read_lease(self.namespace, self.name)
            if body is None:
                return
            record = LeaseRecord.from_body(body)
            if record.holder != self.identity:
                return
            await self.kube.replace_lease(self.namespace, self._body(record, holder="", duration=1))
            logger.info("released Lease %s/%s", self.namespace, self.name)
        except KubeError as exc:
            logger.warning("could not release Lease %s/%s: %s", self.namespace, self.name, exc)
