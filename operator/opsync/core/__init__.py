"""The pure core: what a OnePasswordItem means and what Secret it produces.

Why this package exists: every rule that decides a Secret's content lives here,
as plain functions over plain data, so it is tested in microseconds and can be
reasoned about without a cluster or a network. Nothing here does I/O or imports
httpx, kubernetes, kopf or aiohttp, even transitively (``make lint`` enforces it
with import-linter). It uses the Connect models (:mod:`opsync.connect.models`,
pydantic only), never the client.

In the order a sync uses them: :mod:`crd` (the custom resource's models),
:mod:`itempath` (item paths and their resolution rules), :mod:`mapping` (the
official item → Secret data rules), :mod:`selection`, :mod:`templating` and
:mod:`secrettypes` (the shaping fields), :mod:`compose` (the Secret's content,
from all of those), :mod:`desired` (the whole Secret object, ownership and what
differs from the live one), :mod:`workloads` (which workloads use a Secret and
want restarts). :mod:`errors` is the one error tree and its reasons.
"""
