"""kopf's connection bound: room for every watch stream plus the requests, none with patterns."""

from __future__ import annotations

from opsync.handlers.lifecycle import REQUEST_CONNECTIONS, WATCHED_RESOURCES, exact, kopf_connections


def test_every_watch_stream_has_its_connection_beside_the_requests() -> None:
    assert kopf_connections([]) == WATCHED_RESOURCES + REQUEST_CONNECTIONS  # cluster-wide
    assert kopf_connections(["a"]) == WATCHED_RESOURCES + REQUEST_CONNECTIONS
    assert kopf_connections(["a", "b", "c"]) == 3 * WATCHED_RESOURCES + REQUEST_CONNECTIONS


def test_namespace_patterns_leave_kopfs_connections_unbounded() -> None:
    # kopf finds the namespaces (and opens their streams) itself: no bound can be known.
    assert kopf_connections(["team-*"]) == 0
    assert kopf_connections(["a", "b?"]) == 0
    assert not exact(["a", "!b"]) and exact(["a", "b"])


def test_the_registry_watches_as_many_resources_as_the_bound_counts() -> None:
    from opsync.handlers.registry import build_registry

    registry = build_registry()
    selectors = registry._watching.get_all_selectors() | registry._changing.get_all_selectors()
    assert len(selectors) == WATCHED_RESOURCES
