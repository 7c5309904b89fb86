"""The use cases: async, with no kopf in them.

Why this package exists: it is where opsync acts — resolve and read items
(:mod:`resolve`), write Secrets under the safety rules (:mod:`reconcile`), find
changed items at one Connect request per idle poll (:mod:`poller`), roll out the
workloads of a changed Secret (:mod:`restarts`) and hold the leader Lease
(:mod:`leader`). It talks to the world only through the Connect client and the
Kubernetes layer (:mod:`opsync.kube`), reached through narrow ports
(:mod:`ports`), so the use cases are tested fast against in-memory stand-ins and
the kopf layer stays a thin adapter. It never imports the ``kubernetes`` package
itself (``make lint`` enforces it).
"""
