"""Each seed's own client shapes against a real server (SPEC 13, issue 23): seed
003's `switch (message.event)` page in headless Chromium, seed 002's register →
send by session → receipts → read-up-to flow, seed 004's Vue store reading
`content`. The shapes are the seed documents' (docs/PROTOCOL.md, "The seeds'
clients"); the only change each needs is the one that table names."""

from __future__ import annotations

import json
import time
from typing import Any

from playwright.sync_api import BrowserContext

from tests.browser import (
    api,
    browser_fixture,  # noqa: F401  (the fixtures)
    context_fixture,  # noqa: F401
    hub_fixture,  # noqa: F401
    open_page,
)
from tests.conftest import token, ws_connect
from tests.hubprocess import Hub
from tests.test_api import API_KEY, call
from tests.test_integration import recv, recv_type

# Seed 003's static/js/user.js and merchant.js, as the seed shows them; the one
# change is `&compat=003` in the URL. CONFIG.WS_EVENT_TYPE is the seed's table.
SEED003_PAGE = """<!doctype html><meta charset="utf-8"><title>seed 003</title>
<script>
const CONFIG = {
  WS_URL: location.origin.replace('http', 'ws') + '/ws',
  WS_EVENT_TYPE: { MESSAGE: 'message', TYPING: 'typing', READ: 'read', CONNECT: 'connect', DISCONNECT: 'disconnect' },
};
window.seen = { user: [], merchant: [] };
class App {
  constructor(name, currentUser, userType, token) {
    this.name = name;
    this.state = { currentUser, wsConnection: null };
    this.userType = userType;
    this.token = token;
  }
  connectWebSocket() {
    const wsUrl = `${CONFIG.WS_URL}?user_id=${this.state.currentUser.id}&user_type=${this.userType}&user_name=${this.state.currentUser.username}&token=${this.token}&compat=003`;
    this.state.wsConnection = new WebSocket(wsUrl);
    this.state.wsConnection.onmessage = (event) => { this.handleWebSocketMessage(event.data); };
  }
  handleWebSocketMessage(data) {
    try {
      const message = JSON.parse(data);
      switch (message.event) {
        case CONFIG.WS_EVENT_TYPE.MESSAGE: this.handleIncomingMessage(message); break;
        case CONFIG.WS_EVENT_TYPE.TYPING: this.handleTypingEvent(message); break;
        case CONFIG.WS_EVENT_TYPE.READ: seen[this.name].push({ read: message.data.message_id }); break;
        case CONFIG.WS_EVENT_TYPE.CONNECT: seen[this.name].push({ connect: true }); break;
      }
    } catch (error) {
      console.error('解析WebSocket消息失败:', error);
    }
  }
  handleIncomingMessage(message) {
    seen[this.name].push({ text: message.data.text, id: message.data.message_id, from: message.sender.name,
                           fromType: message.sender.type, to: message.receiver.id, at: Date.parse(message.timestamp) });
  }
  handleTypingEvent(message) { seen[this.name].push({ typing: message.sender.id }); }
  send(obj) { this.state.wsConnection.send(JSON.stringify(obj)); }
}
</script>
"""


# Seed 001's AutoAdsWebSocket, as the seed shows it (window.open and the UI replaced
# by records in `window.seen`); no change.
SEED001_PAGE = """<!doctype html><meta charset="utf-8"><title>seed 001</title>
<script>
window.seen = [];
class AutoAdsWebSocket {
  constructor(token) { this.token = token; this.ws = null; }
  connect() {
    const wsUrl = `${location.origin.replace('http', 'ws')}/ws?token=${this.token}`;
    this.ws = new WebSocket(wsUrl);
    this.ws.onopen = () => { this.sendMessage('client_ready', {}); };
    this.ws.onmessage = (event) => { this.handleMessage(JSON.parse(event.data)); };
    this.ws.onclose = (event) => { seen.push({ closed: event.code }); };
  }
  handleMessage(message) {
    switch (message.type) {
      case 'batchgo_open_url': this.handleBatchGoOpenURL(message.data); break;
      case 'batchgo_progress': seen.push({ progress: `${message.data.completed}/${message.data.total}` }); break;
      case 'system_notification': seen.push({ notice: [message.data.title, message.data.message, message.data.level] }); break;
      case 'token_insufficient': seen.push({ tokens: `当前余额: ${message.data.current_balance}, 需要: ${message.data.required_tokens}` }); break;
      case 'plan_expiring': seen.push({ plan: `${message.data.plan_name}套餐还有${message.data.days_left}天过期` }); break;
      case 'disconnected': seen.push({ disconnected: message.data.code }); break;
      case 'ping': this.sendMessage('pong', {}); break;
      default: seen.push({ other: message.type });
    }
  }
  handleBatchGoOpenURL(data) { data.urls.forEach((url, index) => seen.push({ open: url, after: index * data.delay })); }
  sendMessage(type, data) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: type, data: data, timestamp: Date.now() }));
    }
  }
}
</script>
"""


def test_seed001_client_handles_every_push_of_its_endpoints(context: BrowserContext, hub: Hub) -> None:
    page = open_page(context, hub, html=SEED001_PAGE)
    page.evaluate("t => { window.client = new AutoAdsWebSocket(t); client.connect(); }", hub.token("user_123"))
    page.wait_for_function("seen.some(e => e.other === 'connected')")
    api(hub, "POST", "/api/websocket/batchgo/open-url", {"user_id": "user_123", "task_id": "batch_001", "urls": ["https://example1.com", "https://example2.com"], "delay": 1000})
    api(hub, "POST", "/api/websocket/task/progress", {"user_id": "user_123", "task_id": "task_001", "task_type": "batchgo", "status": "running", "progress": 65.5, "total": 20, "completed": 13, "failed": 0, "message": "处理中..."})
    api(hub, "POST", "/api/websocket/notification", {"user_id": "user_123", "title": "系统通知", "message": "您有新的消息", "level": "info"})
    api(hub, "POST", "/api/websocket/token/insufficient", {"user_id": "user_123", "current_balance": 50, "required_tokens": 100, "task_type": "batchgo"})
    api(hub, "POST", "/api/websocket/plan/expiring", {"user_id": "user_123", "plan_name": "pro", "days_left": 3, "expires_at": 1694592000})
    api(hub, "POST", "/api/users/user_123/kick", {})
    page.wait_for_function("seen.some(e => e.closed)")
    assert [e for e in page.evaluate("seen") if "other" not in e] == [
        {"open": "https://example1.com", "after": 0},
        {"open": "https://example2.com", "after": 1000},
        {"progress": "13/20"},
        {"notice": ["系统通知", "您有新的消息", "info"]},
        {"tokens": "当前余额: 50, 需要: 100"},
        {"plan": "pro套餐还有3天过期"},
        {"disconnected": 4003},
        {"closed": 4003},
    ]


def test_seed003_pages_talk_through_event_sender_and_receiver(context: BrowserContext, hub: Hub) -> None:
    page = open_page(context, hub, html=SEED003_PAGE)
    user = hub.token(5, user_type=1, username="alice")
    merchant = hub.token(5, user_type=2, username="shop")  # user 5 and merchant 5: two principals
    page.evaluate(
        "t => { window.user = new App('user', {id: 5, username: 'alice'}, 1, t[0]); user.connectWebSocket();"
        " window.merchant = new App('merchant', {id: 5, username: 'shop'}, 2, t[1]); merchant.connectWebSocket(); }",
        [user, merchant],
    )
    page.wait_for_function("seen.user.length === 1 && seen.merchant.length === 1")  # both `connect`
    before = time.time() * 1000
    page.evaluate("merchant.send({event: 'typing', receiver: {id: 5, type: 1}, data: {}})")
    page.wait_for_function("seen.user.length === 2")
    assert page.evaluate("seen.user[1]") == {"typing": 5}
    page.evaluate("merchant.send({event: 'message', receiver: {id: 5, type: 1}, data: {text: '您好'}})")
    page.wait_for_function("seen.user.length === 3")
    got = page.evaluate("seen.user[2]")
    assert got["text"] == "您好" and got["from"] == "shop" and got["fromType"] == 2 and got["to"] == 5
    assert before - 5000 < got["at"] < time.time() * 1000 + 5000  # an ISO-8601 time Date.parse reads
    page.evaluate("id => user.send({event: 'read', data: {message_id: id}})", got["id"])
    page.wait_for_function("seen.merchant.some(e => e.read)")
    assert page.evaluate("seen.merchant.find(e => e.read).read") == got["id"]
    # the sending connection does not get its own message back (only the sender's other tabs would)
    assert not page.evaluate("seen.merchant.some(e => e.text)")
    # user 5 and merchant 5 are two principals, each with its own connection
    assert api(hub, "GET", "/api/users/5/online?user_type=1")["connections"] == 1
    assert api(hub, "GET", "/api/users/5/online?user_type=2")["connections"] == 1


async def test_seed002_register_send_by_session_receipts_and_read_up_to(live_server: Any) -> None:
    server = await live_server(api__keys=[API_KEY])
    status, _, _ = await call(server, "POST", "/api/sessions", {
        "session_id": "session-uuid", "participants": [{"user_id": 123}, {"user_id": 456}],
    })  # fmt: skip
    assert status == 200
    user_token = token(server.config, user_id=123)
    agent_token = token(server.config, user_id=456, chat_role="agent", avatar="data:image/png;base64,...")
    async with (
        ws_connect(f"{server.url}/ws?token={user_token}") as user,
        ws_connect(f"{server.url}/ws?token={agent_token}") as agent,
    ):
        for ws, uid, tok in ((user, 123, user_token), (agent, 456, agent_token)):
            await recv_type(ws, "connected")
            # seed 002 registers right after connecting, even with a token handshake
            await ws.send_message(json.dumps({"type": "register", "id": f"reg-{uid}", "data": {
                "user_id": uid, "token": tok, "connection_id": "uuid", "device_id": f"device-{uid}",
                "device_info": {"device_name": "My Computer", "device_type": "desktop", "platform": "Windows"},
            }}))  # fmt: skip
            registered = await recv_type(ws, "registered")
            assert registered["data"]["success"] is True and registered["id"] == f"reg-{uid}"
        ids = []
        for n, text in enumerate(("Hello", "在吗")):
            await agent.send_message(json.dumps({"type": "send_message", "id": f"s{n}", "data": {
                "session_id": "session-uuid", "from_user_id": 456, "message": text, "role": "agent",
                "token": agent_token, "message_type": "text", "reply_to_message_id": None,
            }}))  # fmt: skip
            sent = await recv_type(agent, "message_sent")
            assert sent["id"] == f"s{n}" and sent["data"]["status"] == "sent"
            new = (await recv_type(user, "new_message"))["data"]
            assert new["session_id"] == "session-uuid" and new["text"] == text
            assert new["from"]["chat_role"] == "agent" and new["from_user_id"] == 456 and new["offline"] is False
            ids.append(new["message_id"])
        await user.send_message(json.dumps({"type": "message_delivered", "id": "d", "data": {"message_id": ids[0], "user_id": 123}}))
        assert (await recv_type(user, "ack"))["data"] == {"ok": True}  # seed 002's {"success": true} wait
        assert (await recv_type(agent, "message_status"))["data"]["status"] == "delivered"
        await user.send_message(json.dumps({"type": "message_read", "id": "r", "data": {"up_to_message_id": ids[1], "user_id": 123}}))
        status = (await recv_type(agent, "message_status"))["data"]
        assert status["status"] == "read" and status["message_ids"] == ids
        assert (await recv_type(user, "ack"))["id"] == "r"


async def test_seed004_store_reads_type_and_content(live_server: Any) -> None:
    server = await live_server(api__keys=[API_KEY])
    admin = token(server.config, user_id="123", username="admin")
    messages: list[dict[str, Any]] = []  # the store's `messages.value`

    async def handle(ws: Any) -> dict[str, Any]:
        data = await recv(ws)  # ws.value.onmessage: JSON.parse, push, handleMessage
        messages.append(data)
        return data

    async with ws_connect(f"{server.url}/ws?token={admin}&compat=004") as ws:
        await handle(ws)
        await ws.send_message(json.dumps({"type": "join_room", "content": "chat:room001"}))
        assert (await handle(ws))["type"] == "room_joined"
        await call(server, "POST", "/api/publish", {"type": "notification", "user_id": "123", "data": {
            "title": "用户登录提醒", "body": "admin 于 2025-10-15 14:30:00 登录了系统", "icon": "User", "link": "/system/users",
        }})  # fmt: skip
        last = await handle(ws)
        assert last["type"] == "notification"
        title, body = last["content"]["title"], last["content"]["body"]  # const { title, body } = lastMessage.content
        assert title == "用户登录提醒" and body.startswith("admin")
        assert isinstance(last["timestamp"], int) and abs(last["timestamp"] - time.time()) < 60  # seconds
        await call(server, "POST", "/api/publish", {"type": "data_update", "room": "chat:room001", "data": {
            "entity": "user", "action": "create", "id": "123", "data": {"username": "new_user"},
        }})  # fmt: skip
        last = await handle(ws)
        entity, action, data = (last["content"][k] for k in ("entity", "action", "data"))
        assert (entity, action, data) == ("user", "create", {"username": "new_user"})
        await ws.send_message(json.dumps({"type": "user_message", "content": {"to": "456", "text": "Hello!"}}))
        assert (await handle(ws))["content"]["status"] == "sent"
