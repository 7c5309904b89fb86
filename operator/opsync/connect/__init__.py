"""``opsync.connect``: everything opsync needs to talk to 1Password Connect.

Why this package exists: it is the operator's one door to Connect. It holds
the settings (:class:`ConnectConfig`), the typed models of Connect's JSON
(secret values wrapped from parse time on) and the async client
(:class:`ConnectClient`) with its error mapping and retry policy. No other
package of opsync imports ``httpx``; errors raised here are those of
:mod:`opsync.errors`.
"""

from opsync.connect import models
from opsync.connect.client import USER_AGENT, ConnectClient, scim_eq
from opsync.connect.config import ConnectConfig
from opsync.connect.models import *  # noqa: F403 - the models' public names are this package's

__all__ = ["USER_AGENT", "ConnectClient", "ConnectConfig", "scim_eq", *models.__all__]
