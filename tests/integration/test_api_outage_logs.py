"""An API server outage, as the log shows it at ``--log-level info`` (issue #17 item 4).

A 19 s outage of kube-apiserver used to write about 190 tracebacks and 140 ERROR lines; the
operator recovered by itself, so the log should say just that: one WARNING when the API server
becomes unreachable, one INFO when it is back, and the retries in between at DEBUG only.
"""

from __future__ import annotations

import asyncio
import collections
import re
import sys
import uuid
from pathlib import Path

from kubernetes import config

from bench.kube import Kube
from opsync.connect.client import ConnectClient
from opsync.tooling.controlplane import ControlPlane
from opsync.tooling.harness import ConnectServerProcess
from tests.conftest import REPO
from tests.integration.helpers import VAULT, eventually, exact_operator, new_item, secret_ready, set_field

OUTAGE = 18.0
"""Seconds the API server stays down: longer than kopf's and opsync's first retries and the
leader's renew period, shorter than the lease (60 s), so leadership is kept throughout."""

UNREACHABLE = "the Kubernetes API server is unreachable"
BACK = "the Kubernetes API server is reachable again"

LEVEL = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL)\s")


def by_level(log: str) -> collections.Counter[str]:
    counts = collections.Counter(match.group(1) for line in log.splitlines() if (match := LEVEL.match(line)))
    counts["Traceback"] = log.count("Traceback")
    return counts


async def test_an_api_server_outage_logs_one_warning_and_one_info(
    connect_server: ConnectServerProcess, connect: ConnectClient, tmp_path: Path
) -> None:
    item = await new_item(connect, password="before")
    with ControlPlane() as plane:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        kube = Kube(api)
        kube.install_crds(sorted((REPO / "crds").glob("*.yaml")))
        namespace = kube.create_namespace(f"opo-{uuid.uuid4().hex[:10]}")
        operator = exact_operator(
            plane.kubeconfig,
            connect_server,
            tmp_path / "operator.log",
            namespace,
            env={"OPSYNC_LEASE_DURATION": "60", "POLLING_INTERVAL": "1"},
        )
        try:
            kube.create_item(namespace, "outage", f"vaults/{VAULT}/items/{item.id}")
            await eventually(lambda: secret_ready(kube, namespace, "outage"))
            before = len(operator.logs())

            outage = asyncio.create_task(asyncio.to_thread(plane.restart_apiserver, down=OUTAGE))
            await asyncio.sleep(3)
            await set_field(connect, item, "password", "during")  # changed while the API is down
            await outage

            await eventually(
                lambda: (kube.secret_data(namespace, "outage") or {}).get("password") == b"during", within=60
            )
            # The INFO line comes with the first request that succeeds; give it a few seconds.
            for _ in range(50):
                if BACK in operator.logs()[before:]:
                    break
                await asyncio.sleep(0.2)
            operator.check()
            log = operator.logs()[before:]
        finally:
            operator.stop()
            api.close()

    counts = by_level(log)
    sys.stderr.write(f"log lines during and after the outage: {dict(counts)}\n")
    lines = log.splitlines()
    warnings = [line for line in lines if " WARNING " in line]
    unreachable = [line for line in warnings if UNREACHABLE in line]
    # Besides ours, only warnings about HTTP answers may remain: a kube-apiserver that has just
    # started may answer 429 or 5xx for a moment, an answer and not a network failure, so e.g.
    # "could not post Event" keeps its WARNING then. None showed in our runs; allow 2.
    others = [line for line in warnings if UNREACHABLE not in line]
    assert "Traceback" not in log, log[-6000:]
    assert len(unreachable) == 1, log[-6000:]
    assert len(others) <= 2, "\n".join(others)
    assert not [line for line in lines if " ERROR " in line or " CRITICAL " in line], log[-6000:]
    assert len([line for line in lines if " INFO " in line and BACK in line]) == 1, log[-6000:]
