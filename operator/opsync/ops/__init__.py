"""Operations: what a cluster operator watches opsync through.

Why this package exists: Prometheus metrics (:mod:`metrics`) and the HTTP
endpoints that serve them with the health and readiness probes
(:mod:`server`) are the same whichever handler or use case reports to them.
"""
