"""Which workloads use a Secret, and a Deployment's 1Password annotations: pure functions.

The annotation mode and the deletion rule of the official operator ("keep the
Secret while another Deployment uses it") read Deployment bodies; so will
rollout restarts. Nothing here talks to an API: it inspects dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opsync import desired
from opsync.mapping import sanitize_secret_name


def deployment_annotations(body: Mapping[str, Any]) -> dict[str, str]:
    """The 1Password annotations of a Deployment: its metadata first, else its pod template's."""
    for found in (
        body.get("metadata", {}).get("annotations") or {},
        body.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {},
    ):
        if desired.ITEM_PATH in found:
            return {k: v for k, v in found.items() if k.startswith(desired.ANNOTATION_PREFIX)}
    return {}


def uses_secret(body: Mapping[str, Any], secret_name: str) -> bool:
    """Whether a Deployment names the Secret in item-name, or its pods use it (env, envFrom,
    a secret volume or a projected one); the official operator's test, without its bug of
    stopping at the first volume that is not a Secret."""
    if sanitize_secret_name(deployment_annotations(body).get(desired.ITEM_NAME, "")) == secret_name:
        return True
    pod = body.get("spec", {}).get("template", {}).get("spec") or {}
    for container in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]:
        for env in container.get("env") or []:
            if ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") == secret_name:
                return True
        for source in container.get("envFrom") or []:
            if (source.get("secretRef") or {}).get("name") == secret_name:
                return True
    for volume in pod.get("volumes") or []:
        if (volume.get("secret") or {}).get("secretName") == secret_name:
            return True
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("secret") or {}).get("name") == secret_name:
                return True
    return False
