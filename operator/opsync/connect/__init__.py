"""``opsync.connect``: everything opsync needs to talk to 1Password Connect.

Why this package exists: it is the operator's one door to Connect. It holds
the settings (:mod:`~opsync.connect.config`), the typed models of Connect's
JSON, with secret values wrapped from parse time on (:mod:`~opsync.connect.models`,
pydantic only: the pure core uses them without loading an HTTP client), and the
async client (:mod:`~opsync.connect.client`) with its error mapping and retry
policy, which with its transport (:mod:`~opsync.connect.transport`) are the
only modules of opsync's runtime that import ``httpx``. Errors raised here
are those of :mod:`opsync.core.errors`.

This ``__init__`` imports nothing, so that importing the models never loads
the client: import what you need from its module.
"""
