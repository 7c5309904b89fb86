"""Which kopf handler answers which resource and event: the one place handlers are registered.

Why this module exists: the handlers are plain module-level functions
(:mod:`~opsync.handlers.items`, :mod:`~opsync.handlers.deployments`,
:mod:`~opsync.handlers.drift`, :mod:`~opsync.handlers.lifecycle`); this table wires
them to a fresh kopf registry when the operator starts, so nothing is
registered at import time and the whole map fits on one screen.

* OnePasswordItems: every event keeps the poller current (and force-syncs);
  create, update and resume sync; delete deletes or retains the Secret.
* Secrets labelled ``opsync.io/managed``: edits and deletions are repaired.
* Deployments in annotation mode: as OnePasswordItems.
"""

from __future__ import annotations

import kopf

from opsync.core import crd, desired
from opsync.handlers import deployments, drift, items, lifecycle

_ITEMS = (crd.GROUP, crd.VERSION, crd.PLURAL)
_DEPLOYMENTS = ("apps", "v1", "deployments")


def build_registry() -> kopf.OperatorRegistry:
    """A new registry with every opsync handler."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(lifecycle.login)
    kopf.on.startup(registry=registry)(lifecycle.configure)

    kopf.on.event(*_ITEMS, registry=registry)(items.track_item)
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*_ITEMS, registry=registry)(items.sync_item)
    kopf.on.delete(*_ITEMS, registry=registry)(items.delete_item)

    kopf.on.event("v1", "secrets", labels={desired.MANAGED_LABEL: "true"}, registry=registry)(
        drift.secret_changed
    )

    annotated = deployments.is_annotated_deployment
    kopf.on.event(*_DEPLOYMENTS, registry=registry)(deployments.track_deployment)
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*_DEPLOYMENTS, when=annotated, registry=registry)(deployments.sync_deployment)
    kopf.on.delete(*_DEPLOYMENTS, when=annotated, registry=registry)(deployments.delete_deployment)
    return registry
