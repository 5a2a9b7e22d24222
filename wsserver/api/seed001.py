"""Seed 001's request bodies turned into the messages its clients expect.

Each function takes a parsed JSON body and returns `(type, data)`; `data` is
one of seed 001's Go structs in snake_case, every field present (Go encodes
zero values too): `SystemNotificationData`, `BatchGoOpenURLData`,
`TaskProgressData`, `TokenInsufficientData`, `PlanExpiringData`. A missing
required field or a wrong type is `HttpError(400)` naming the field.

No I/O and no hub: the route handlers address and deliver the result.
"""

from __future__ import annotations

import re
from typing import Any

from wsserver.net.http import HttpError, optional, require
from wsserver.protocol.i18n import text

__all__ = [
    "LEVELS",
    "batchgo_open_url",
    "plan_expiring",
    "probe_notification",
    "system_notification",
    "task_progress",
    "token_insufficient",
]

LEVELS = ("info", "warning", "error", "success")
DEFAULT_OPEN_URL_DELAY = 1000  # ms between two window.open calls, as seed 001's service sends
_TASK_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,54}$")  # so "<task_type>_progress" is a valid type
_ID = (str, int)

Body = dict[str, Any]


def _non_empty(name: str, value: Any) -> Any:
    if value == "":
        raise HttpError(400, "http_field_empty", name)
    return value


def _list_of_strings(body: Body, name: str) -> list[str]:
    value = require(body, name, list)
    if not value or not all(isinstance(v, str) and v for v in value):
        raise HttpError(400, "http_field_strings", name)
    return value


def system_notification(body: Body) -> tuple[str, dict[str, Any]]:
    """`system_notification` with `SystemNotificationData {title, message, level, action, action_url}`."""
    level = optional(body, "level", str, "info")
    if level not in LEVELS:
        raise HttpError(400, "http_field_choice", "level", choices=", ".join(LEVELS))
    return "system_notification", {
        "title": require(body, "title", str),
        "message": require(body, "message", str),
        "level": level,
        "action": optional(body, "action", str, ""),
        "action_url": optional(body, "action_url", str, ""),
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


def batchgo_open_url(body: Body) -> tuple[str, dict[str, Any]]:
    """`batchgo_open_url` with `BatchGoOpenURLData {task_id, urls, delay}` (delay in ms)."""
    delay = optional(body, "delay", int, DEFAULT_OPEN_URL_DELAY)
    if delay < 0:
        raise HttpError(400, "http_field_min", "delay", min=0)
    return "batchgo_open_url", {
        "task_id": _non_empty("task_id", require(body, "task_id", _ID)),
        "urls": _list_of_strings(body, "urls"),
        "delay": delay,
    }


def task_progress(body: Body) -> tuple[str, dict[str, Any]]:
    """`<task_type>_start` for status `started`, `<task_type>_complete` for
    `completed`/`failed`, else `<task_type>_progress`; data `TaskProgressData`."""
    task_type = require(body, "task_type", str)
    if not _TASK_TYPE.fullmatch(task_type):
        raise HttpError(400, "http_task_type", "task_type")
    status = _non_empty("status", require(body, "status", str))
    if status == "started":
        suffix = "start"
    elif status in ("completed", "failed"):
        suffix = "complete"
    else:
        suffix = "progress"
    return f"{task_type}_{suffix}", {
        "task_id": _non_empty("task_id", require(body, "task_id", _ID)),
        "task_type": task_type,
        "status": status,
        "progress": optional(body, "progress", float, 0),
        "total": optional(body, "total", int, 0),
        "completed": optional(body, "completed", int, 0),
        "failed": optional(body, "failed", int, 0),
        "message": optional(body, "message", str, ""),
        "start_time": optional(body, "start_time", int, 0),
        "end_time": optional(body, "end_time", int, 0),
    }


def token_insufficient(body: Body, locale: str) -> tuple[str, dict[str, Any]]:
    """`token_insufficient` with `TokenInsufficientData {current_balance, required_tokens,
    task_type, message}`; a missing `message` is written from the catalogue."""
    balance = require(body, "current_balance", int)
    required = require(body, "required_tokens", int)
    message = optional(body, "message", str, "") or text(
        "insufficient_tokens_text", locale, current_balance=balance, required_tokens=required
    )
    return "token_insufficient", {
        "current_balance": balance,
        "required_tokens": required,
        "task_type": optional(body, "task_type", str, ""),
        "message": message,
    }


def plan_expiring(body: Body, locale: str) -> tuple[str, dict[str, Any]]:
    """`plan_expiring`, or `plan_expired` when `days_left <= 0`, with `PlanExpiringData
    {plan_name, days_left, expires_at, message, upgrade_url}`."""
    plan = require(body, "plan_name", str)
    days = require(body, "days_left", int)
    expired = days <= 0
    message = optional(body, "message", str, "") or text(
        "plan_expired_text" if expired else "plan_expiring_text",
        locale,
        plan_name=plan,
        days_left=days,
    )
    return "plan_expired" if expired else "plan_expiring", {
        "plan_name": plan,
        "days_left": days,
        "expires_at": optional(body, "expires_at", int, 0),
        "message": message,
        "upgrade_url": optional(body, "upgrade_url", str, ""),
    }
