"""Status conditions and Events for a sync result, and the kopf error for a failure.

Conditions follow metav1.Condition: ``lastTransitionTime`` moves only when the
status flips, and an Event is posted on every transition (plus one whenever
the Secret is created or updated). Status is written only when something but
the clock changed, so a steady item costs no Kubernetes write. The status is built through
:class:`~opsync.core.crd.OnePasswordItemStatus`, so it always has the CRD's shape, and every
reason is a :class:`~opsync.core.errors.Reason`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from opsync.core import crd
from opsync.core.desired import ObjectRef
from opsync.core.errors import Reason
from opsync.kube import KubeApi
from opsync.sync.poller import Outage
from opsync.sync.reconcile import Failure, Outcome, Target, success_message

logger = logging.getLogger(__name__)

READY = "Ready"
CONTENT_VALID = "ContentValid"
FRESH = "Fresh"
CONTESTED = "Contested"
_ALWAYS_KEPT = frozenset({"type", "status", "message", "lastTransitionTime"})
"""The condition keys that even the official operator's CRD keeps."""
MAX_RETRY_DELAY = 300.0


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def retry_delay(retry: int) -> float:
    """Exponential backoff for transient failures: 5 s, 10 s, 20 s … capped at five minutes."""
    return min(MAX_RETRY_DELAY, 5.0 * 2.0 ** min(retry, 10))


def condition_of(status: Mapping[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def ready_condition(status: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return condition_of(status, READY)


def _condition(
    previous: Mapping[str, Any] | None,
    kind: str,
    *,
    ok: bool,
    reason: Reason,
    message: str,
    generation: int | None,
) -> crd.Condition:
    """A condition whose ``lastTransitionTime`` moves only when its status flips."""
    flag = "True" if ok else "False"
    transition = (
        previous["lastTransitionTime"]
        if previous and previous.get("status") == flag and previous.get("lastTransitionTime")
        else now()
    )
    return crd.Condition(
        type=kind,
        status=flag,
        reason=reason,
        message=message,
        lastTransitionTime=transition,
        observedGeneration=generation,
    )


def content_condition(
    current: Mapping[str, Any] | None, outcome: Outcome, generation: int | None
) -> crd.Condition | None:
    """``ContentValid`` for a typed Secret: False (written anyway) with what is wrong, else True."""
    if not outcome.content_checked:
        return None
    problem = outcome.content_problem
    return _condition(
        condition_of(current, CONTENT_VALID),
        CONTENT_VALID,
        ok=problem is None,
        reason=Reason.Valid if problem is None else Reason.InvalidSecretData,
        message=problem or "the Secret's content follows the rules of its type",
        generation=generation,
    )


def new_status(
    current: Mapping[str, Any] | None,
    *,
    ready: bool,
    reason: Reason,
    message: str,
    generation: int | None,
    outcome: Outcome | None = None,
    secret_name: str | None = None,
) -> dict[str, Any] | None:
    """The status to write (a merge patch), or None when nothing but the clock would change.

    Only the fields set here are dumped (``exclude_unset``): an explicit None stays, as a
    merge patch's "remove", and the keys of ``current`` this does not set are kept as they are.
    """
    current = dict(current or {})
    previous = ready_condition(current)
    condition = _condition(previous, READY, ok=ready, reason=reason, message=message, generation=generation)
    if outcome is not None and outcome.action != "frozen":
        # A sync that composed says everything about the content: ContentValid or none at all.
        content = content_condition(current, outcome, generation)
        others = [content] if content is not None else []
    else:  # a failure (or a frozen Secret) says nothing new about the content: keep what was there
        others = [
            crd.Condition.model_validate(c)
            for c in current.get("conditions") or []
            if c.get("type") not in (READY, None)
        ]
    fields: dict[str, Any] = {"conditions": [condition, *others], "observedGeneration": generation}
    if outcome is not None:
        fields["itemPath"] = outcome.resolved_path
        fields["itemVersion"] = outcome.item_version
        if len(outcome.items) > 1:
            fields["items"] = [crd.ItemStatus(itemPath=p, itemVersion=v) for p, v in outcome.items]
        elif "items" in current:
            fields["items"] = None  # a merge patch: null removes the list, back to one item
    if secret_name is not None:
        fields["secretName"] = secret_name
    fields["lastSyncTime"] = now()  # not compared: only the clock moving is no change
    model = crd.OnePasswordItemStatus(**fields)
    status: dict[str, Any] = {**current, **_dump(model)}
    if previous is not None and _shaped(status, current, previous) == _shaped(current, current, previous):
        return None
    return status


def _dump(model: crd.OnePasswordItemStatus) -> dict[str, Any]:
    """The fields set on ``model``, as JSON (a reason becomes its plain string)."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _shaped(status: Mapping[str, Any], current: Mapping[str, Any], condition: Mapping[str, Any]) -> Any:
    """``status`` cut to the keys the stored status and its Ready condition have, without the clock.

    The official operator's CRD (which a Helm upgrade keeps) has only ``conditions`` with
    ``type``, ``status``, ``message`` and ``lastTransitionTime``: the API server prunes the
    rest. Comparing only what survives keeps a steady item from being rewritten every time.
    """
    return (
        {k: v for k, v in status.items() if k in current and k not in ("conditions", "lastSyncTime")},
        [
            {k: v for k, v in c.items() if k in condition or k in _ALWAYS_KEPT}
            for c in status.get("conditions") or []
        ],
    )


def _same_failure(previous: Mapping[str, Any] | None, failure: Failure) -> bool:
    """Whether the stored condition already reports this failure (by reason; by message where
    the official CRD pruned the reason)."""
    if previous is None or previous.get("status") != "False":
        return False
    if "reason" in previous:
        return bool(previous.get("reason") == failure.reason)
    return previous.get("message") in (failure.message, failure.persistent_message)


def _with_condition(
    current: Mapping[str, Any] | None, kind: str, condition: crd.Condition | None
) -> list[dict[str, Any]]:
    """The current conditions with the one of type ``kind`` replaced by ``condition`` (or removed)."""
    kept = [dict(c) for c in (current or {}).get("conditions") or [] if c.get("type") != kind]
    if condition is not None:
        kept.append(condition.model_dump(mode="json", exclude_none=True))
    return kept


def fresh_status(current: Mapping[str, Any] | None, outage: Outage | None) -> dict[str, Any] | None:
    """The status patch that says Connect is failing (``Fresh=False``, beside an untouched
    ``Ready``) or, with ``outage`` None, that removes that condition; None when nothing changes.
    ``Fresh`` exists only during an outage, so a steady item costs no write."""
    condition = (
        crd.Condition(
            type=FRESH,
            status="False",
            reason=outage.reason,
            message=outage.describe(),
            lastTransitionTime=outage.since,
        )
        if outage is not None
        else None
    )
    conditions = _with_condition(current, FRESH, condition)
    if conditions == [dict(c) for c in (current or {}).get("conditions") or []]:
        return None
    return {"conditions": conditions}


def contested_status(current: Mapping[str, Any] | None, message: str) -> dict[str, Any]:
    """The status patch that adds ``Contested=True`` (reason ``RivalWriter``) beside ``Ready``;
    the next successful sync rewrites the conditions without it."""
    condition = crd.Condition(
        type=CONTESTED, status="True", reason=Reason.RivalWriter, message=message, lastTransitionTime=now()
    )
    return {"conditions": _with_condition(current, CONTESTED, condition)}


async def post(kube: KubeApi, ref: ObjectRef, *, type_: str, reason: Reason, message: str) -> None:
    try:
        await kube.post_event(ref, type_=type_, reason=reason, message=message)
    except Exception as exc:  # an Event is never worth failing a sync for
        logger.warning(
            "could not post Event %s on %s %s/%s: %s", reason, ref.kind, ref.namespace, ref.name, exc
        )


async def report_success(
    kube: KubeApi, target: Target, outcome: Outcome, *, body: Mapping[str, Any] | None
) -> None:
    message = success_message(target, outcome)
    if outcome.action in ("created", "updated"):
        await post(kube, target.owner_ref, type_="Normal", reason=Reason.SecretSynced, message=message)
    await _warn_on_content(kube, target, outcome, body)
    if body is None or target.owner.kind != crd.KIND:
        return
    previous = ready_condition(body.get("status"))
    status = new_status(
        body.get("status"),
        ready=True,
        reason=Reason.Synced,
        message=message,
        generation=body.get("metadata", {}).get("generation"),
        outcome=outcome,
        secret_name=target.secret_name,
    )
    if status is not None:
        await kube.patch_item_status(target.namespace, target.owner.name, status)
    if previous is not None and previous.get("status") != "True":
        await post(kube, target.owner_ref, type_="Normal", reason=Reason.Synced, message=message)


async def _warn_on_content(
    kube: KubeApi, target: Target, outcome: Outcome, body: Mapping[str, Any] | None
) -> None:
    """A Warning Event when content written anyway breaks its type's rules: once per finding
    (the ContentValid condition remembers it), or at every write where there is no status."""
    problem = outcome.content_problem
    if problem is None or outcome.action == "frozen":
        return
    if body is not None and target.owner.kind == crd.KIND:
        previous = condition_of(body.get("status"), CONTENT_VALID)
        if previous is not None and previous.get("status") == "False" and previous.get("message") == problem:
            return
    elif outcome.action not in ("created", "updated"):
        return
    await post(kube, target.owner_ref, type_="Warning", reason=Reason.InvalidSecretData, message=problem)


async def report_failure(
    kube: KubeApi, target: Target, failure: Failure, *, body: Mapping[str, Any] | None, retry: int
) -> None:
    """Record the failure; raise kopf.TemporaryError when retrying can help."""
    previous = ready_condition((body or {}).get("status"))
    if failure.persistent_message is not None and _same_failure(previous, failure):
        failure = dataclasses.replace(failure, message=failure.persistent_message)
    if not _same_failure(previous, failure):
        await post(kube, target.owner_ref, type_="Warning", reason=failure.reason, message=failure.message)
    if body is not None and target.owner.kind == crd.KIND:
        status = new_status(
            body.get("status"),
            ready=False,
            reason=failure.reason,
            message=failure.message,
            generation=body.get("metadata", {}).get("generation"),
        )
        if status is not None:
            await kube.patch_item_status(target.namespace, target.owner.name, status)
    if failure.retryable:
        raise kopf.TemporaryError(failure.message, delay=retry_delay(retry))
