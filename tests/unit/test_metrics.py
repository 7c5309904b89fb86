"""opsync.ops.metrics: names, labels and values in the exposition text; instances independent."""

from __future__ import annotations

import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from opsync.ops.metrics import CONTENT_TYPE, Metrics

ITEM = "/v1/vaults/{vault}/items/{item}"


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the rendered text, parsed back, keyed by name and labels."""
    body, _ = metrics.render()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def test_render_has_every_metric_with_its_labels() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.connect_request("GET", ITEM, "200", 0.02)
    metrics.connect_request("GET", ITEM, "200", 0.03)
    metrics.connect_request("GET", ITEM, "404", 0.01)
    metrics.connect_request("GET", "/v1/vaults", "error", 5.0)
    metrics.poll(1.5, ok=True)
    metrics.poll(0.2, ok=False)
    metrics.items_checked(7)
    metrics.items_changed(2)
    metrics.secret_written("created")
    metrics.secret_written("updated")
    metrics.secret_written("updated")
    metrics.secret_written("restored")
    metrics.restart("Deployment")
    metrics.restart("StatefulSet")
    metrics.sync_error("ItemNotFound")
    metrics.sync_error("ConnectUnavailable")
    metrics.set_leader(True)
    metrics.set_tracked(12)

    body, content_type = metrics.render()
    assert content_type == CONTENT_TYPE
    assert content_type.startswith("text/plain")
    text = body.decode()
    for name in (
        "opsync_connect_requests_total",
        "opsync_connect_request_duration_seconds",
        "opsync_polls_total",
        "opsync_poll_duration_seconds",
        "opsync_items_checked_total",
        "opsync_items_changed_total",
        "opsync_secrets_written_total",
        "opsync_restarts_total",
        "opsync_sync_errors_total",
        "opsync_leader",
        "opsync_tracked_items",
    ):
        assert f"\n{name}" in text, name

    found = samples(metrics)

    def get(name: str, **labels: str) -> float | None:
        return found.get((name, frozenset(labels.items())))

    assert get("opsync_connect_requests_total", method="GET", endpoint=ITEM, status="200") == 2
    assert get("opsync_connect_requests_total", method="GET", endpoint=ITEM, status="404") == 1
    assert get("opsync_connect_requests_total", method="GET", endpoint="/v1/vaults", status="error") == 1
    assert get("opsync_connect_request_duration_seconds_count", method="GET", endpoint=ITEM) == 3
    assert get("opsync_connect_request_duration_seconds_sum", method="GET", endpoint=ITEM) == pytest.approx(
        0.06
    )
    assert get("opsync_connect_request_duration_seconds_bucket", method="GET", endpoint=ITEM, le="0.025") == 2
    assert get("opsync_polls_total", result="ok") == 1
    assert get("opsync_polls_total", result="error") == 1
    assert get("opsync_poll_duration_seconds_count") == 2
    assert get("opsync_poll_duration_seconds_sum") == pytest.approx(1.7)
    assert get("opsync_items_checked_total") == 7
    assert get("opsync_items_changed_total") == 2
    assert get("opsync_secrets_written_total", action="created") == 1
    assert get("opsync_secrets_written_total", action="updated") == 2
    assert get("opsync_secrets_written_total", action="restored") == 1
    assert get("opsync_restarts_total", kind="Deployment") == 1
    assert get("opsync_restarts_total", kind="StatefulSet") == 1
    assert get("opsync_sync_errors_total", reason="ItemNotFound") == 1
    assert get("opsync_sync_errors_total", reason="ConnectUnavailable") == 1
    assert get("opsync_leader") == 1
    assert get("opsync_tracked_items") == 12


def test_fresh_metrics_start_at_zero() -> None:
    metrics = Metrics(process_metrics=False)
    assert value(metrics, "opsync_polls_total", result="ok") == 0
    assert value(metrics, "opsync_polls_total", result="error") == 0
    for action in ("created", "updated", "restored"):
        assert value(metrics, "opsync_secrets_written_total", action=action) == 0
    assert value(metrics, "opsync_items_checked_total") == 0
    assert value(metrics, "opsync_leader") == 0
    assert value(metrics, "opsync_tracked_items") == 0
    # Open-ended labels appear only once used.
    assert not any(name == "opsync_restarts_total" for name, _ in samples(metrics))


def test_gauges_go_down() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.set_leader(True)
    metrics.set_tracked(5)
    metrics.set_leader(False)
    metrics.set_tracked(3)
    assert metrics.value("opsync_leader") == 0
    assert metrics.value("opsync_tracked_items") == 3


def test_items_default_to_one_and_zero_is_a_no_op() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.items_checked()
    metrics.items_checked(0)
    metrics.items_changed()
    assert metrics.value("opsync_items_checked_total") == 1
    assert metrics.value("opsync_items_changed_total") == 1


def test_unknown_secret_action_is_refused() -> None:
    metrics = Metrics(process_metrics=False)
    with pytest.raises(ValueError, match="unknown Secret write action"):
        metrics.secret_written("deleted")


def test_two_instances_are_independent() -> None:
    first = Metrics()
    second = Metrics()
    assert first.registry is not second.registry
    first.connect_request("GET", ITEM, "200", 0.1)
    first.sync_error("ItemNotFound")
    first.set_leader(True)
    first.items_checked(3)

    assert first.value("opsync_connect_requests_total", method="GET", endpoint=ITEM, status="200") == 1
    assert second.value("opsync_connect_requests_total", method="GET", endpoint=ITEM, status="200") is None
    assert second.value("opsync_sync_errors_total", reason="ItemNotFound") is None
    assert second.value("opsync_leader") == 0
    assert second.value("opsync_items_checked_total") == 0
    assert b'reason="ItemNotFound"' not in second.render()[0]


def test_nothing_goes_to_the_global_registry() -> None:
    from prometheus_client import REGISTRY

    metrics = Metrics()
    metrics.poll(1.0, ok=True)
    assert REGISTRY.get_sample_value("opsync_polls_total", {"result": "ok"}) is None


def test_process_metrics_are_optional() -> None:
    with_process = Metrics(process_metrics=True).render()[0].decode()
    without = Metrics(process_metrics=False).render()[0].decode()
    assert "process_" not in without
    if sys.platform.startswith("linux"):  # process metrics come from /proc
        assert "process_cpu_seconds_total" in with_process
