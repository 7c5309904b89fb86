"""The kopf layer: the only package of opsync that imports kopf.

Why this package exists: kopf is a framework with opinions (bodies, memos,
retries by exception); keeping it here keeps the use cases (:mod:`opsync.sync`)
plain async code that is tested without it. Handlers are module-level functions,
one module per concern — :mod:`items`, :mod:`deployments` (annotation mode),
:mod:`drift` — all ending in one sync path (:mod:`syncing`) that reports through
:mod:`reporting` (status and Events). :mod:`registry` wires them to kopf in one
table, :mod:`runtime` is the typed object every handler reads from kopf's memo,
:mod:`lifecycle` configures kopf and :mod:`operator` runs it.
"""
