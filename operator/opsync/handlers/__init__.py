"""The kopf layer: the only package of opsync that imports kopf.

:func:`build_registry` registers every handler on a fresh registry, built from
the settings at start-up (so intervals and filters come from configuration,
and nothing is registered at import time). Handlers stay thin: they turn a kopf
body into a :class:`~opsync.sync.reconcile.Target`, call the
:class:`~opsync.sync.reconcile.Reconciler` kept in the memo, and report the result
as status and Events.
"""

from opsync.handlers.registry import build_registry, run_operator

__all__ = ["build_registry", "run_operator"]
