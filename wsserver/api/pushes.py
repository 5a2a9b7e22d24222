"""Seed 001's pushes: what its endpoints send, built from their checked bodies.

Each function takes a request body as its shape (`wsserver.api.bodies`)
and returns `(type, data)`; `data` is one of seed 001's Go structs in
snake_case, every field present (Go encodes zero values too):
`SystemNotificationData`, `BatchGoOpenURLData`, `TaskProgressData`,
`TokenInsufficientData`, `PlanExpiringData`.

No I/O and no hub: the route handlers address and deliver the result.
"""

from __future__ import annotations

from typing import Any

from wsserver.api.bodies import (
    Notice,
    OpenUrlRequest,
    PlanExpiringRequest,
    TaskProgressRequest,
    TokenInsufficientRequest,
)
from wsserver.protocol.i18n import text

__all__ = [
    "batchgo_open_url",
    "plan_expiring",
    "probe_notification",
    "system_notification",
    "task_progress",
    "token_insufficient",
]


def system_notification(n: Notice) -> tuple[str, dict[str, Any]]:
    """`system_notification` with `SystemNotificationData {title, message, level, action, action_url}`."""
    return "system_notification", {
        "title": n.title,
        "message": n.message,
        "level": n.level,
        "action": n.action,
        "action_url": n.action_url,
    }


def probe_notification(locale: str) -> tuple[str, dict[str, Any]]:
    """The `system_notification` that `GET /api/websocket/test` pushes."""
    return "system_notification", {
        "title": text("test_notification_title", locale),
        "message": text("test_notification_text", locale),
        "level": "info",
        "action": "",
        "action_url": "",
    }


def batchgo_open_url(r: OpenUrlRequest) -> tuple[str, dict[str, Any]]:
    """`batchgo_open_url` with `BatchGoOpenURLData {task_id, urls, delay}` (delay in ms)."""
    return "batchgo_open_url", {"task_id": r.task_id, "urls": r.urls, "delay": r.delay}


def task_progress(r: TaskProgressRequest) -> tuple[str, dict[str, Any]]:
    """`<task_type>_start` for status `started`, `<task_type>_complete` for
    `completed`/`failed`, else `<task_type>_progress`; data `TaskProgressData`."""
    if r.status == "started":
        suffix = "start"
    elif r.status in ("completed", "failed"):
        suffix = "complete"
    else:
        suffix = "progress"
    return f"{r.task_type}_{suffix}", {
        "task_id": r.task_id,
        "task_type": r.task_type,
        "status": r.status,
        "progress": r.progress,
        "total": r.total,
        "completed": r.completed,
        "failed": r.failed,
        "message": r.message,
        "start_time": r.start_time,
        "end_time": r.end_time,
    }


def token_insufficient(r: TokenInsufficientRequest, locale: str) -> tuple[str, dict[str, Any]]:
    """`token_insufficient` with `TokenInsufficientData {current_balance, required_tokens,
    task_type, message}`; a missing `message` is written from the catalogue."""
    message = r.message or text(
        "insufficient_tokens_text",
        locale,
        current_balance=r.current_balance,
        required_tokens=r.required_tokens,
    )
    return "token_insufficient", {
        "current_balance": r.current_balance,
        "required_tokens": r.required_tokens,
        "task_type": r.task_type,
        "message": message,
    }


def plan_expiring(r: PlanExpiringRequest, locale: str) -> tuple[str, dict[str, Any]]:
    """`plan_expiring`, or `plan_expired` when `days_left <= 0`, with `PlanExpiringData
    {plan_name, days_left, expires_at, message, upgrade_url}`."""
    expired = r.days_left <= 0
    message = r.message or text(
        "plan_expired_text" if expired else "plan_expiring_text",
        locale,
        plan_name=r.plan_name,
        days_left=r.days_left,
    )
    return "plan_expired" if expired else "plan_expiring", {
        "plan_name": r.plan_name,
        "days_left": r.days_left,
        "expires_at": r.expires_at,
        "message": message,
        "upgrade_url": r.upgrade_url,
    }
