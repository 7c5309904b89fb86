"""Another writer keeps changing a managed Secret back: opsync stops repairing it, with backoff,
and says so once: a Warning Event, a Contested condition naming the writer, a metric.

Before: two writers restored each other's writes (26,834 DriftRepaired Events and 13,548 Secret
writes in a few minutes). The rival here is a loop writing the Secret as the field manager
``rival-writer``, as another controller would.
"""

from __future__ import annotations

import asyncio
import base64
import time

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.tooling.harness import OperatorProcess
from tests.integration.helpers import VAULT, eventually, new_item

FIGHT_SECONDS = 8.0


async def test_a_rival_writer_is_not_fought(
    operator: OperatorProcess, op_namespace: str, kube: Kube, connect: ConnectClient
) -> None:
    item = await new_item(connect, password="ours")
    kube.create_item(op_namespace, "fought", f"vaults/{VAULT}/items/{item.id}")
    await eventually(lambda: kube.secret_data(op_namespace, "fought") == {"password": b"ours"})
    restored_before = operator.logs().count("restored Secret")
    contested_before = operator.metric("opsync_drift_contested_total")

    ends = time.monotonic() + FIGHT_SECONDS
    writes = 0
    while time.monotonic() < ends:
        value = base64.b64encode(f"theirs-{writes}".encode()).decode()
        await asyncio.to_thread(
            kube.core.patch_namespaced_secret,
            "fought",
            op_namespace,
            {"data": {"password": value}},
            field_manager="rival-writer",
        )
        writes += 1
        await asyncio.sleep(0.3)

    repairs = operator.logs().count("restored Secret") - restored_before
    assert 3 <= repairs <= 4, f"{repairs} repairs against {writes} rival writes"
    assert operator.metric("opsync_drift_contested_total") == contested_before + 1

    warnings = await eventually(
        lambda: [e for e in kube.events(op_namespace, "fought") if e.reason == "RivalWriter"]
    )
    assert warnings[0].type == "Warning" and "'rival-writer'" in (warnings[0].message or "")
    conditions = kube.item(op_namespace, "fought")["status"]["conditions"]
    (contested,) = [c for c in conditions if c["type"] == "Contested"]
    assert contested["status"] == "True" and contested["reason"] == "RivalWriter"
    assert "'rival-writer'" in contested["message"]
    (ready,) = [c for c in conditions if c["type"] == "Ready"]
    assert ready["status"] == "True"
    # One DriftRepaired Event for the repairs made, its count raised (not one Event per repair).
    repaired = [e for e in kube.events(op_namespace, "fought") if e.reason == "DriftRepaired"]
    assert len(repaired) == 1 and repaired[0].count == repairs
