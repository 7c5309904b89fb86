"""Which workloads use a Secret, whether they want a restart, and the restart itself: pure functions.

The annotation mode and the deletion rule of the official operator ("keep the
Secret while another Deployment uses it") read Deployment bodies; rollout
restarts read the bodies of every workload kind with a pod template
(Deployment, StatefulSet, DaemonSet, Argo Rollout). Nothing here talks to an
API: it inspects dicts and builds patch bodies, so ``opsync.sync.restarts`` only
has to list, decide and send.

A restart is recorded on the pod template as ``opsync.io/restarted-for``:
``secretName=fingerprint`` pairs, one per Secret the workload was restarted
for. A restart is skipped when the fingerprint of the Secret's current data is
already there, which makes restarts happen once per data change, however
often the change is reported (the next poll, an operator restart between
writing the Secret and restarting, two owners reporting the same Secret).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from opsync.core import desired
from opsync.core.gobool import parse_bool
from opsync.core.mapping import SecretData, sanitize_secret_name

RESTARTED_FOR = "opsync.io/restarted-for"
"""Pod-template annotation: the Secrets (and data fingerprints) the workload was last restarted for."""

FINGERPRINT_LENGTH = 16


@dataclass(frozen=True)
class WorkloadKind:
    """A kind of workload with a pod template, and where the API serves it."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


DEPLOYMENT = WorkloadKind("apps", "v1", "deployments", "Deployment")
STATEFUL_SET = WorkloadKind("apps", "v1", "statefulsets", "StatefulSet")
DAEMON_SET = WorkloadKind("apps", "v1", "daemonsets", "DaemonSet")
ROLLOUT = WorkloadKind("argoproj.io", "v1alpha1", "rollouts", "Rollout")
WORKLOAD_KINDS: tuple[WorkloadKind, ...] = (DEPLOYMENT, STATEFUL_SET, DAEMON_SET, ROLLOUT)


def workload_kind(body: Mapping[str, Any]) -> WorkloadKind | None:
    """The kind of a workload body, from its ``apiVersion`` and ``kind``; None for anything else."""
    for kind in WORKLOAD_KINDS:
        if body.get("kind") == kind.kind and body.get("apiVersion") == kind.api_version:
            return kind
    return None


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
    """Whether a workload names the Secret in item-name, or its pods use it (env, envFrom,
    a secret volume or a projected one) in containers or init containers; the official
    operator's test, without its bug of stopping at the first volume that is not a Secret.

    ``imagePullSecrets`` do not count (the kubelet reads them at pull time, a restart changes
    nothing for running pods), nor do ephemeral containers (they are not part of a template)."""
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


# -- Whether a restart is wanted -------------------------------------------------------------------


class AutoRestart(NamedTuple):
    """The auto-restart decision for one Secret used by one workload, and where it came from.

    ``source`` is ``"Secret"``, ``"workload"``, ``"Namespace"`` or ``"default"``. ``invalid``
    holds the annotation value when it could not be parsed (the decision is then False, as in
    the official operator), so the caller can log which object carries it. Annotation values
    are not secret; the Secret's data is never involved."""

    wanted: bool
    source: str
    invalid: str | None = None


def _annotation(annotations: Mapping[str, str] | None) -> str:
    # Go reads a missing key as "", and treats "" as "not set": so does opsync.
    return (annotations or {}).get(desired.AUTO_RESTART, "")


def needs_namespace(
    secret_annotations: Mapping[str, str] | None, workload_annotations: Mapping[str, str] | None
) -> bool:
    """Whether the decision depends on the Namespace: neither the Secret nor the workload decides."""
    return not _annotation(secret_annotations) and not _annotation(workload_annotations)


def auto_restart_wanted(
    secret_annotations: Mapping[str, str] | None,
    workload_annotations: Mapping[str, str] | None,
    namespace_annotations: Mapping[str, str] | None,
    default: bool,
) -> AutoRestart:
    """The official precedence: the Secret's ``operator.1password.io/auto-restart`` annotation
    (copied from its owner), else the workload's (its ``metadata.annotations``), else the
    Namespace's, else ``AUTO_RESTART``. The first one set decides; an invalid value means
    False, it does not fall through to the next level."""
    for source, found in (
        ("Secret", secret_annotations),
        ("workload", workload_annotations),
        ("Namespace", namespace_annotations),
    ):
        value = _annotation(found)
        if value:
            try:
                return AutoRestart(parse_bool(value), source)
            except ValueError:
                return AutoRestart(False, source, value)
    return AutoRestart(default, "default")


# -- The restart record ----------------------------------------------------------------------------


def data_fingerprint(data: SecretData, salt: str) -> str:
    """A short fingerprint of Secret data for the restart record: HMAC-SHA256 keyed by ``salt``
    (the Secret's ``metadata.uid``) over :meth:`SecretData.digest`, cut to 16 hex characters.

    Why keyed: the record sits in a workload annotation, readable by anyone who can read the
    workload, often many more people than can read the Secret. A plain hash of a short password
    would let them test guesses offline. The uid is only known to those who can read the Secret
    (or list Secrets), who can read the value anyway. A Secret deleted and created again gets a
    new uid, hence a new fingerprint and one more restart, which is what a re-created Secret
    deserves."""
    mac = hmac.new(salt.encode(), data.digest().encode(), hashlib.sha256)
    return mac.hexdigest()[:FINGERPRINT_LENGTH]


def parse_record(value: str | None) -> dict[str, str]:
    """``"a=1f…,b=2e…"`` → ``{"a": "1f…", "b": "2e…"}``; malformed entries are ignored."""
    record: dict[str, str] = {}
    for entry in (value or "").split(","):
        name, sep, fingerprint = entry.strip().partition("=")
        if sep and name and fingerprint:
            record[name] = fingerprint
    return record


def format_record(record: Mapping[str, str]) -> str:
    """The annotation value: pairs sorted by Secret name, so equal records are equal strings."""
    return ",".join(f"{name}={record[name]}" for name in sorted(record))


def template_annotations(body: Mapping[str, Any]) -> dict[str, str]:
    """The pod template's annotations of a workload."""
    return dict(((body.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations") or {})


def restart_patch(
    body: Mapping[str, Any], fingerprints: Mapping[str, str], now: str
) -> dict[str, Any] | None:
    """The merge patch that restarts ``body`` for the changed Secrets in ``fingerprints``
    (``{secret name: data fingerprint}``), or None when each is already in the restart record.

    The patch sets ``operator.1password.io/last-restarted`` (the official operator's trigger,
    an RFC 3339 ``now``) and the record, keeping the entries of other Secrets. Changing the pod
    template is what makes the workload's controller roll its pods."""
    record = parse_record(template_annotations(body).get(RESTARTED_FOR))
    if all(record.get(name) == fingerprint for name, fingerprint in fingerprints.items()):
        return None
    record.update(fingerprints)
    annotations = {desired.LAST_RESTARTED: now, RESTARTED_FOR: format_record(record)}
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}
