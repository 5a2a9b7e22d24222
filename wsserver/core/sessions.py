"""Chat sessions: seed 002's conversations with named participants (SPEC 13).

A backend opens a session (`POST /api/sessions {session_id, group_id?,
participants: [{user_id, user_type?}]}`, the `OpenSession` command) and ends
it (`DELETE /api/sessions/{session_id}`, `CloseSession`). A `send_message`
with that `session_id` and no recipient then goes to every other participant
(`DirectMessaging`, one stored message per recipient, each in its own inbox
and mailbox), and `history {session_id}` pages the session's messages (the
message store's `session_history`).

Sessions are durable: `chat_session` and `chat_session_end` records, and
the `sessions` part of the snapshot (a snapshot without it loads none, so
the state's format is unchanged). A session lives in one group; its id is
unique within the group (opening it again replaces its participants).

Invariant: `sessions` holds exactly the sessions opened and not ended, by
`core.keys` key of (group, session id); a participant is stored as
`{user_id, user_type}` as the backend gave it.
"""

from __future__ import annotations

from typing import Any

import attrs

from wsserver.core.commit import CommitLog
from wsserver.core.direct import DirectMessaging
from wsserver.core.inbox import own_key
from wsserver.core.keys import Key, escape
from wsserver.core.session import Handler, Session
from wsserver.errors import ErrorCode, ProtocolError
from wsserver.protocol.envelope import Inbound, id_key
from wsserver.protocol.messages import SendMessage, read

__all__ = ["ChatSessions", "sending_by_session", "session_key"]


def session_key(group_key: str, session_id: Any) -> Key:
    """The key of a session in a group (ids escaped, `core.keys`)."""
    return f"{escape(group_key)}|{escape(id_key(session_id))}"


class ChatSessions:
    """The open chat sessions (a durable part of the hub)."""

    record_types: tuple[str, ...] = ("chat_session", "chat_session_end")

    def __init__(self, commit: CommitLog) -> None:
        self.commit = commit
        self.sessions: dict[Key, dict[str, Any]] = {}

    # -- durable state -------------------------------------------------------

    def apply(self, rec: dict[str, Any]) -> None:
        """Fold one record."""
        key = session_key(rec["group"], rec["session_id"])
        if rec["t"] == "chat_session":
            self.sessions[key] = {
                "session_id": rec["session_id"],
                "group_id": rec["group_id"],
                "participants": rec["participants"],
                "time": rec["time"],
            }
        else:
            self.sessions.pop(key, None)

    def to_state(self) -> dict[str, Any]:
        """The snapshot part: every open session (records are never changed once stored)."""
        return {"sessions": list(self.sessions.values())}

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot's."""
        self.sessions = {
            session_key(id_key(s["group_id"]), s["session_id"]): s for s in state.get("sessions", ())
        }

    # -- commands ------------------------------------------------------------

    def open(self, session_id: Any, group_id: Any, participants: list[dict[str, Any]], now_ms: int) -> dict[str, Any]:
        """Open (or re-open with new participants) a session; its stored form."""
        self.commit.record(
            {
                "t": "chat_session",
                "group": id_key(group_id),
                "session_id": session_id,
                "group_id": group_id,
                "participants": participants,
                "time": now_ms,
            }
        )
        return self.sessions[session_key(id_key(group_id), session_id)]

    def close(self, session_id: Any, group_id: Any) -> bool:
        """End a session; False when there was none."""
        if session_key(id_key(group_id), session_id) not in self.sessions:
            return False
        self.commit.record({"t": "chat_session_end", "group": id_key(group_id), "session_id": session_id})
        return True

    def get(self, group_key: str, session_id: Any) -> dict[str, Any] | None:
        """An open session of a group, or None."""
        return self.sessions.get(session_key(group_key, session_id))


def sending_by_session(sessions: ChatSessions, direct: DirectMessaging, handler: Handler) -> Handler:
    """`send_message` (`handler`) that also sends by `session_id` alone: a
    message naming a session and no recipient goes to every other participant
    of that session in the sender's group, one stored message each; the
    first recipient's `message_sent` echoes the request `id` (the others'
    carry none), so the request has one reply. A sender that is no
    participant is `forbidden`, an unknown session `not_found`.

    A `client_msg_id` is kept with the first recipient's message only (the
    sender's de-duplication is by `client_msg_id`: each further message would
    be taken for a resend of the first); a resend within the window is
    answered with that first message, `duplicate`, and sends nothing."""

    def send(session: Session, msg: Inbound) -> None:
        data = msg.data
        if (
            not isinstance(data, dict)
            or data.get("session_id") is None
            or data.get("to_user_id") is not None
            or (session.identity is not None and session.identity.is_device)
        ):
            handler(session, msg)
            return
        ident = session.identity
        assert ident is not None
        chat = sessions.get(ident.group_key, data["session_id"])
        if chat is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "session_unknown", field="session_id")
        me = (id_key(ident.user_type), id_key(ident.user_id))
        parties = [(p["user_id"], p.get("user_type")) for p in chat["participants"]]
        if me not in {(id_key(t), id_key(u)) for u, t in parties}:
            raise ProtocolError(ErrorCode.FORBIDDEN, "session_not_participant", field="session_id")
        cmid = data.get("client_msg_id")
        resent = cmid is not None and direct.store.find_duplicate(own_key(session), str(cmid), direct.env.now_ms())
        first = True
        for user_id, user_type in parties:
            if (id_key(user_type), id_key(user_id)) == me:
                continue
            named = {**data, "to_user_id": user_id, "to_user_type": user_type}
            out = read(named, SendMessage)
            if not first:  # the first recipient's message carries the client_msg_id
                out = attrs.evolve(out, client_msg_id=None)
            direct.send(session, msg if first else attrs.evolve(msg, id=None), out, user_id, user_type, "session_id")
            first = False
            if resent:  # a resend: the first message answered `duplicate`, nothing sent again
                return
        if first:  # nobody else in the session: the request still gets its answer
            raise ProtocolError(ErrorCode.NOT_FOUND, "session_alone", field="session_id")

    return send
