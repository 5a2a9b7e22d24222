"""The catalogue of human-readable texts, in zh-CN (the seeds' wording) and en.

Invariant: every key has both locales; `text()` never raises for a known key,
and an unknown key falls back to the key itself so a typo shows up in tests
rather than as a crash on the wire.
"""

from __future__ import annotations

LOCALES = ("zh-CN", "en")

CATALOGUE: dict[str, tuple[str, str]] = {
    # success texts (seed 000 / 001 wording)
    "connected": ("WebSocket连接成功", "WebSocket connected"),
    "registered": ("连接注册成功", "connection registered"),
    "auth_success": ("认证成功，请同步Line账号列表", "Authenticated, please sync your Line accounts"),
    "heartbeat_ok": ("心跳正常", "heartbeat ok"),
    "token_refreshed": ("令牌已刷新", "token refreshed"),
    # message errors
    "invalid_json": ("无效的JSON", "invalid JSON"),
    "lone_surrogate": ("字符串含有孤立的代理字符（不是有效的 Unicode）", "a string holds a lone surrogate (not valid Unicode)"),
    "not_object": ("消息必须是JSON对象", "a message must be a JSON object"),
    "too_deep": ("JSON嵌套层数过多（最多 {limit} 层）", "JSON nested too deep (at most {limit} levels)"),
    "missing_type": ("缺少消息类型 type", "missing message type"),
    "bad_type": ("消息类型必须是字符串", "the message type must be a string"),
    "bad_id": ("id 必须是字符串或整数", "id must be a string or an integer"),
    "unknown_type": ("未知的消息类型: {type}", "unknown message type: {type}"),
    "binary_not_supported": ("不支持二进制消息", "binary messages are not supported"),
    "rate_limited": ("发送过于频繁，消息已丢弃", "too many messages, this one was dropped"),
    "unavailable": ("共享存储暂不可用，请求未保存，请稍后重试", "the shared storage is unavailable: nothing was stored, try again later"),
    "mailbox_full": ("对方的离线消息已满，消息未保存", "the recipient's mailbox is full, the message was not stored"),
    "field_missing": ("缺少字段: {field}", "missing field: {field}"),
    "field_type": ("字段类型错误: {field}", "wrong type for field: {field}"),
    "field_invalid": ("字段值无效: {field}", "invalid value for field: {field}"),
    "already_authenticated": ("连接已认证", "this connection is already authenticated"),
    "auth_required": ("请先认证", "authenticate first"),
    "activation_code_mismatch": ("激活码与连接不符", "the activation code does not match this connection"),
    "refresh_user_mismatch": ("新令牌的用户与连接不符", "the new token is for another user"),
    "refresh_not_jwt": ("该连接不使用令牌", "this connection does not use a token"),
    "invalid_room": ("房间名无效", "invalid room name"),
    "room_forbidden": ("无权访问该房间", "not allowed in this room"),
    "not_in_room": ("不在该房间中", "not a member of this room"),
    "too_many_rooms": ("加入的房间数已达上限", "too many rooms on this connection"),
    "room_full": ("房间人数已满", "the room is full"),
    "group_forbidden": ("无权访问其他分组", "no access to another group"),
    "device_no_rooms": ("桌面客户端不能加入房间", "activation-code clients cannot join rooms"),
    "device_no_direct": ("桌面客户端不能收发私信", "activation-code clients cannot send or receive direct messages"),
    "session_unknown": ("会话不存在", "no such session"),
    "session_not_participant": ("您不是该会话的参与者", "you are not a participant of this session"),
    "session_alone": ("会话中没有其他参与者", "nobody else is in this session"),
    "not_recipient": ("只有接收者可以回执该消息", "only the recipient may acknowledge this message"),
    "desktop_only": ("仅桌面客户端可以发送该消息", "only desktop (activation-code) clients may send this"),
    "account_other_group": ("该账号属于其他分组", "this account belongs to another group"),
    "account_unknown": ("账号未同步，请先同步Line账号列表", "unknown account: sync your Line accounts first"),
    "internal": ("服务器内部错误", "internal server error"),
    # authentication failures
    "token_missing": ("未提供令牌", "no token given"),
    "token_invalid": ("令牌无效", "invalid token"),
    "token_expired": ("令牌已过期", "token expired"),
    "token_no_exp": ("令牌缺少过期时间 exp", "the token has no expiry time (exp)"),
    "token_not_yet_valid": ("令牌尚未生效", "token not yet valid"),
    "token_algorithm": ("不支持的签名算法", "signature algorithm not allowed"),
    "token_issuer": ("令牌签发者无效", "invalid token issuer"),
    "token_audience": ("令牌受众无效", "invalid token audience"),
    "token_claims": ("令牌缺少 user_id", "the token has no user_id"),
    "token_no_user_type": ("令牌缺少 user_type", "the token has no user_type"),
    "jwt_not_configured": ("服务器未配置令牌验证", "token authentication is not configured"),
    "activation_code_invalid": ("激活码无效", "invalid activation code"),
    "activation_code_disabled": ("激活码已停用", "activation code disabled"),
    "auth_throttled": ("认证失败次数过多，请稍后再试", "too many failed authentication attempts, try again later"),
    # handshake refusals and close reasons
    "query_identity_mismatch": (
        "连接参数 user_id / user_type / user_name 与令牌不符",
        "the user_id / user_type / user_name of the URL disagree with the token",
    ),
    "compat_unknown": ("compat 参数无效（可选 003、004）", "unknown compat (003 or 004)"),
    "origin_forbidden": ("来源不被允许", "origin not allowed"),
    "over_capacity": ("服务器连接数已满", "server at capacity"),
    "too_many_pending": ("等待认证的连接数已满", "too many connections waiting to authenticate"),
    "too_many_user_connections": ("该用户连接数已达上限", "too many connections for this user"),
    "too_many_ip_connections": ("该IP连接数已达上限", "too many connections from this address"),
    "not_found": ("未找到", "not found"),
    "heartbeat_timeout": ("心跳超时", "heartbeat timeout"),
    "auth_timeout": ("认证超时", "authentication timeout"),
    "replaced": ("已被新的连接替代", "replaced by a newer connection"),
    "slow_consumer": ("客户端接收过慢", "slow consumer"),
    "rate_abuse": ("发送过于频繁，连接已关闭", "rate limit abuse"),
    "binary_abuse": ("二进制消息过多，连接已关闭", "too many binary messages"),
    "message_too_big": ("消息过大", "message too big"),
    "protocol_error": ("WebSocket 协议错误", "WebSocket protocol error"),
    "invalid_utf8": ("文本消息不是有效的 UTF-8", "text is not valid UTF-8"),
    "shutting_down": ("服务器正在关闭", "server shutting down"),
    "kicked": ("已被管理员踢出", "kicked by an administrator"),
    "kicked_reason": ("{reason}", "{reason}"),
    "kicked_by_own_device": ("已被您的其他设备下线", "signed out from another of your devices"),  # a kick's own reason, as the admin gave it
    # HTTP API (SPEC 6)
    "api_credentials_missing": ("需要认证: Authorization: Bearer <管理员令牌> 或 X-API-Key", "authentication required: Authorization: Bearer <admin token> or X-API-Key"),
    "api_key_invalid": ("API密钥无效", "invalid API key"),
    "api_admin_required": ("需要管理员权限", "admin role required"),
    "api_read_only": ("此 API 密钥为只读，不能执行更改操作", "this API key is read-only: it cannot change anything"),
    "api_group_scope": ("此 API 密钥仅限其分组: {field} 须为其中之一", "this API key is limited to its groups: {field} must name one of them"),
    "api_group_wide": ("此 API 密钥仅限其分组，不能访问全节点的数据或操作", "this API key is limited to its groups: node-wide reads and operations are refused"),
    "not_ready": ("服务尚未就绪", "not ready"),
    "cluster_unavailable": ("集群不可用：Redis 无响应", "cluster unavailable: Redis does not answer"),
    "background_failing": ("后台任务失败: {tasks}", "failing: {tasks}"),
    "list_or": (" 或 ", " or "),  # joins alternatives, e.g. the JSON types a field may have
    # HTTP requests: framing and limits
    "http_malformed": ("请求格式错误", "malformed request"),
    "http_bad_target": ("请求目标格式错误", "malformed request target"),
    "http_head_too_large": ("请求头过大", "request header fields too large"),
    "http_length_and_chunked": ("请求不能同时带有 Content-Length 和 Transfer-Encoding", "Content-Length and Transfer-Encoding in one request"),
    "http_bad_body": ("请求体格式错误", "malformed request body"),
    "http_body_too_large": ("请求体过大", "request body too large"),
    "http_method": ("不允许的请求方法", "method not allowed"),
    # HTTP API bodies (field_missing, field_invalid and not_found above serve here too)
    "http_invalid_json": ("请求体不是有效的JSON", "invalid JSON body"),
    "http_not_object": ("请求体必须是JSON对象", "JSON body must be an object"),
    "http_json_number": ("请求体中的数字超出范围", "invalid JSON body (number out of range)"),
    "http_lone_surrogate": ("请求体的字符串含有孤立的代理字符（不是有效的 Unicode）", "invalid JSON body (a string holds a lone surrogate)"),
    "http_json_depth": ("请求体嵌套超过 {depth} 层", "invalid JSON body (nested deeper than {depth})"),
    "http_field_type": ("字段类型错误: {field}（应为 {expected}）", "invalid field: {field} (expected {expected})"),
    "http_field_empty": ("字段不能为空: {field}", "invalid field: {field} (must not be empty)"),
    "http_field_pattern": ("字段格式错误: {field}（须匹配 {pattern}）", "invalid field: {field} (must match {pattern})"),
    "http_field_ids": ("字段值无效: {field}（应为非空的 id 数组）", "invalid field: {field} (expected a non-empty array of ids)"),
    "http_field_strings": ("字段值无效: {field}（应为非空的字符串数组）", "invalid field: {field} (expected a non-empty array of strings)"),
    "http_field_choice": ("字段值无效: {field}（可选值: {choices}）", "invalid field: {field} (one of {choices})"),
    "http_field_min": ("字段值无效: {field}（须 >= {min}）", "invalid field: {field} (must be >= {min})"),
    "http_field_max": ("字段值无效: {field}（须 <= {max}）", "invalid field: {field} (must be <= {max})"),
    "http_task_type": ("字段值无效: {field}（仅限小写字母、数字和 _）", "invalid field: {field} (lower-case letters, digits and _)"),
    "http_code_format": ("字段值无效: {field}（1-128 个字符，首尾不能有空格）", "invalid field: {field} (1-128 characters, no surrounding spaces)"),
    "http_targets_conflict": ("目标冲突: {targets}（只能给出一个）", "conflicting targets: {targets} (give exactly one)"),
    "http_target_missing": ("缺少字段: {field}（或 user_ids、group_id、room 加 group_id、activation_code、all: true）", "missing field: {field} (or user_ids, group_id, room with group_id, activation_code, all: true)"),
    "http_recipient_missing": ("缺少字段: {field}（或 session_id）", "missing field: {field} (or session_id)"),
    "http_persist_target": ("字段值无效: {field}（仅用于 user_id 或 user_ids）", "invalid field: {field} (only for user_id or user_ids)"),
    "http_kind_target": ("字段值无效: {field}（仅与单独的 group_id 一起使用）", "invalid field: {field} (only with group_id alone)"),
    "code_not_found": ("激活码不存在", "activation code not found"),
    # texts of the seed-001 pushes when the backend gives none
    "insufficient_tokens_text": ("Token余额不足，当前余额: {current_balance}，需要: {required_tokens}", "Not enough tokens: balance {current_balance}, {required_tokens} needed"),
    "plan_expiring_text": ("您的{plan_name}套餐还有{days_left}天过期", "Your {plan_name} plan expires in {days_left} days"),
    "plan_expired_text": ("您的{plan_name}套餐已过期", "Your {plan_name} plan has expired"),
    # seed 001's own reply texts (the `message` of its endpoints' replies)
    "seed001_fetched": ("获取成功", "fetched"),
    "seed001_checked": ("检查完成", "checked"),
    "seed001_sent": ("发送成功", "sent"),
    "test_notification_title": ("测试通知", "Test notification"),
    "test_notification_text": ("这是一条测试消息，WebSocket连接正常", "This is a test message: the WebSocket connection works"),
    "webhooks_off": ("未配置 Webhook（{field} 为空）", "webhooks are off ({field} is empty)"),
}


def text(key: str, locale: str = "zh-CN", **params: object) -> str:
    """The catalogue text for `key` in `locale`, with `{name}` fields filled."""
    pair = CATALOGUE.get(key)
    if pair is None:
        return key
    template = pair[1] if locale == "en" else pair[0]
    return template.format(**params) if params else template
