"""The HTTP API's route table (SPEC 6): each route's method, path, handler (a
method of `api.routes.Api`, by name), summary, tag, access, body shape, query
and reply schema. `api.routes.install` serves it and `api.openapi.document`
describes it: one declaration for both.
"""

from __future__ import annotations

from wsserver.api.bodies import (
    DEFAULT_PAGE,
    MAX_PAGE,
    BroadcastNotice,
    BroadcastRequest,
    CodeRequest,
    KickRequest,
    MessageRequest,
    NotificationRequest,
    OpenUrlRequest,
    PlanExpiringRequest,
    PublishRequest,
    SessionRequest,
    TaskProgressRequest,
    TokenInsufficientRequest,
)
from wsserver.api.openapi import Route

__all__ = ["ROUTES"]

_FILTERS = (
    ("user_type", False, "only connections of this user_type"),
    ("group_id", False, "only connections of this group"),
)

_PAGE = (
    ("after", False, "the last number already read (default 0: from the start)"),
    ("limit", False, f"at most this many (1-{MAX_PAGE}, default {DEFAULT_PAGE})"),
)

ROUTES: tuple[Route, ...] = (
    # -- seed 001 -----------------------------------------------------------------
    Route("POST", "/api/websocket/notification", "notification",
          "Push system_notification to a user", "seed001",
          body=NotificationRequest, reply="PushResult"),
    Route("POST", "/api/websocket/batchgo/open-url", "batchgo_open_url",
          "Push batchgo_open_url (BatchGo Basic mode window.open)", "seed001",
          body=OpenUrlRequest, reply="PushResult"),
    Route("POST", "/api/websocket/task/progress", "task_progress",
          "Push <task_type>_start | _progress | _complete", "seed001",
          body=TaskProgressRequest, reply="PushResult"),
    Route("POST", "/api/websocket/token/insufficient", "token_insufficient",
          "Push token_insufficient", "seed001",
          body=TokenInsufficientRequest, reply="PushResult"),
    Route("POST", "/api/websocket/plan/expiring", "plan_expiring",
          "Push plan_expiring, or plan_expired when days_left <= 0", "seed001",
          body=PlanExpiringRequest, reply="PushResult"),
    Route("GET", "/api/websocket/stats", "websocket_stats",
          "Connection count and online user ids", "seed001", reply="WebsocketStats"),
    Route("GET", "/api/websocket/user/{user_id}/online", "websocket_user_online",
          "Whether a user has a connection", "seed001", reply="UserOnline"),
    Route("POST", "/api/websocket/broadcast", "broadcast",
          "Push system_notification (or {type, data}) to everyone", "seed001",
          body=(BroadcastNotice, BroadcastRequest), reply="PushResult"),
    Route("GET", "/api/websocket/test", "websocket_test",
          "Push a test system_notification to a user", "seed001",
          query=(("user_id", True, "the user to notify"),), reply="PushResult"),
    # -- general ------------------------------------------------------------------
    Route("POST", "/api/publish", "publish",
          "Publish any message type to users, a group, a room or everyone", "push",
          body=PublishRequest, reply="PublishResult"),
    Route("POST", "/api/messages", "send_message",
          "A direct message from a user, sent by the backend (id, seq, receipts, mailbox, history)",
          "push", body=MessageRequest, reply="MessageSent"),
    Route("GET", "/api/stats", "stats", "Hub statistics", "ops", reply="Stats"),
    Route("GET", "/api/nodes", "nodes", "The nodes of the cluster (one without cluster mode)",
          "ops", reply="NodeList"),
    Route("GET", "/api/users/{user_id}/online", "user_online",
          "Whether a user is online, and on how many connections", "users",
          query=_FILTERS, reply="UserOnline"),
    Route("GET", "/api/users/{user_id}/connections", "user_connections",
          "A user's connections (device list)", "users",
          query=_FILTERS, reply="DeviceList"),
    Route("POST", "/api/users/{user_id}/kick", "kick",
          "Send kicked {reason} to a user's connections, then close them with 4003", "users",
          body=KickRequest, reply="KickResult"),
    Route("GET", "/api/users/{user_id}/tasks", "user_tasks",
          "The latest state of a user's running and recently completed tasks", "users",
          query=_FILTERS, reply="TaskList"),
    Route("GET", "/api/rooms", "rooms", "Rooms with members", "rooms",
          query=(("group_id", False, "only the rooms of this group"),), reply="RoomList"),
    Route("GET", "/api/rooms/{room}/members", "room_members",
          "A room's members, one entry per principal", "rooms",
          query=(("group_id", False, "the room's group (absent: connections without a group)"),),
          reply="RoomMembers"),
    # -- CRM (seed 000) -------------------------------------------------------------
    Route("GET", "/api/groups/{group_id}/stats", "group_stats",
          "A group's CRM counters (as in group_stats_update)", "crm", reply="GroupStats"),
    Route("GET", "/api/groups/{group_id}/accounts", "group_accounts",
          "A group's Line accounts", "crm", reply="GroupAccounts"),
    Route("GET", "/api/groups/{group_id}/customers", "group_customers",
          "A group's customers, by customer_db_id", "crm", query=_PAGE, reply="CustomerPage"),
    Route("GET", "/api/groups/{group_id}/follow-ups", "group_follow_ups",
          "A group's follow-ups, by follow_up_id", "crm", query=_PAGE, reply="FollowUpPage"),
    Route("GET", "/api/groups/{group_id}/incoming", "group_incoming",
          "A group's incoming records, by incoming_id", "crm", query=_PAGE, reply="IncomingPage"),
    Route("GET", "/api/activation-codes", "list_codes",
          "Every activation code with its live connection count", "crm", reply="CodeList"),
    Route("POST", "/api/activation-codes", "put_code",
          "Create or replace an activation code (disabling closes its connections with 4001)",
          "crm", body=CodeRequest, reply="CodeResult"),
    Route("DELETE", "/api/activation-codes/{code}", "delete_code",
          "Delete an activation code and close its connections with 4001", "crm",
          reply="CodeDeleted"),
    # -- chat sessions (seed 002) --------------------------------------------------
    Route("POST", "/api/sessions", "open_session",
          "Open (or re-open) a chat session: send_message by session_id reaches every other participant",
          "chat", body=SessionRequest, reply="ChatSession"),
    Route("DELETE", "/api/sessions/{session_id}", "close_session",
          "End a chat session", "chat",
          query=(("group_id", False, "the session's group"),), reply="SessionClosed"),
    # -- operations ---------------------------------------------------------------
    Route("POST", "/api/webhooks/test", "webhook_test",
          "Send a signed ping event to webhooks.url and answer the receiver's status", "ops",
          reply="WebhookTest"),
    Route("GET", "/metrics", "metrics",
          "Prometheus metrics (text format)", "ops", access="metrics"),
    Route("GET", "/api/openapi.json", "openapi",
          "This OpenAPI description", "ops", access="open"),
)  # fmt: skip
