"""opsync: sync 1Password Connect items into Kubernetes Secrets.

The package root only carries the version; importing it has no side effects
(no configuration is read and no client is created at import time).
"""

__version__ = "0.1.0"
