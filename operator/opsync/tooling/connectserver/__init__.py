"""A local, wire-compatible 1Password Connect server backed by a YAML data file.

Why this package exists: opsync's tests, the ``make run`` demo and users who
develop GitOps manifests offline need a Connect server that the official SDKs
and the official operator accept unchanged, with state they can read and edit.
``opsync connect-server`` runs it from the command line; tests use it in process::

    from opsync.tooling.connectserver import ConnectServer, FaultConfig

    async with ConnectServer(path) as server:
        token = server.issue_token(["Kubernetes", "Platform,r"])

Modules: ``models`` (state = data-file schema), ``datafile`` (YAML in and out),
``store`` (live state, persistence, version arithmetic), ``bodies`` and ``patch``
(request bodies), ``serialize`` (response JSON), ``filters`` (SCIM), ``tokens``
(ES256 JWTs), ``generator`` (passwords, TOTP), ``activity``, ``metrics``,
``faults``, ``app`` (HTTP routes), ``protocol`` (aiohttp's low-level server, JSON
errors for what its parser refuses), ``server`` (:class:`ConnectServer`), ``cli``.
See docs/connect-server.md.
"""

from opsync.tooling.connectserver.app import ServerOptions
from opsync.tooling.connectserver.datafile import DataFileError
from opsync.tooling.connectserver.faults import FaultConfig
from opsync.tooling.connectserver.server import ConnectServer
from opsync.tooling.connectserver.store import ItemNotFound, Store, StoreLookupError, VaultNotFound
from opsync.tooling.connectserver.tokens import Access, TokenClaims, TokenError

__all__ = [
    "Access",
    "ConnectServer",
    "DataFileError",
    "FaultConfig",
    "ItemNotFound",
    "ServerOptions",
    "Store",
    "StoreLookupError",
    "TokenClaims",
    "TokenError",
    "VaultNotFound",
]
