"""The API activity log behind ``GET /v1/activity``: who did what to which vault or item, and the outcome.

Why this module exists: Connect records every authorised request (``SUCCESS``) and
every refusal for lack of access (``DENY``) with the token that made it; the local
server keeps the same records in memory (newest first, bounded) so the activity
endpoint can be tested and used for debugging. Records hold ids, the user agent
and the caller's address only: never a token, a field value or file content.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from opsync.tooling.connectserver.models import format_time, utcnow

Action = Literal["READ", "CREATE", "UPDATE", "DELETE"]
Result = Literal["SUCCESS", "DENY"]
DEFAULT_CAPACITY = 10_000


@dataclass(frozen=True)
class Actor:
    id: str
    account: str
    token_id: str
    user_agent: str
    request_ip: str


@dataclass(frozen=True)
class Resource:
    type: Literal["ITEM", "VAULT"]
    vault_id: str | None = None
    item_id: str | None = None
    item_version: int | None = None


@dataclass(frozen=True)
class ActivityRecord:
    request_id: str
    timestamp: datetime
    action: Action
    result: Result
    actor: Actor
    resource: Resource

    def to_json(self) -> dict[str, Any]:
        resource: dict[str, Any] = {"type": self.resource.type}
        if self.resource.vault_id is not None:
            resource["vault"] = {"id": self.resource.vault_id}
        if self.resource.item_id is not None:
            resource["item"] = {"id": self.resource.item_id}
        if self.resource.item_version is not None:
            resource["itemVersion"] = self.resource.item_version
        return {
            "requestId": self.request_id,
            "timestamp": format_time(self.timestamp),
            "action": self.action,
            "result": self.result,
            "actor": {
                "id": self.actor.id,
                "account": self.actor.account,
                "jti": self.actor.token_id,
                "userAgent": self.actor.user_agent,
                "requestIp": self.actor.request_ip,
                "ip": self.actor.request_ip,
            },
            "resource": resource,
        }


class ActivityLog:
    """The most recent records, newest first."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._records: deque[ActivityRecord] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._records)

    def record(self, action: Action, result: Result, actor: Actor, resource: Resource) -> ActivityRecord:
        entry = ActivityRecord(str(uuid.uuid4()), utcnow(), action, result, actor, resource)
        self._records.appendleft(entry)
        return entry

    def page(self, *, limit: int, offset: int) -> tuple[list[ActivityRecord], int]:
        """Records ``offset`` .. ``offset + limit`` (newest first) and the total count."""
        records = list(self._records)
        return records[offset : offset + limit], len(records)

    def records(self) -> list[ActivityRecord]:
        return list(self._records)
