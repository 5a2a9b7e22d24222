"""The hub's shared state and its rules, without I/O.

Everything shared between connections lives in one `Hub`: sessions (one per
connection), principals and their connections (tabs, devices), connections per
IP, rooms (scoped by group) and activation codes. Exactly one task, the
registry actor (`wsserver.net.registry`), calls into a `Hub`; nothing else
mutates it, so there are no locks.

A `Hub` never blocks and never does I/O: it hands frames to `Outlet`s, whose
`deliver()` must not block (the trio shell puts them into a bounded queue and
closes a connection that cannot keep up with 4008).

Capacity: `limits.max_connections` counts authenticated sessions only;
sessions still waiting to authenticate have their own cap
(`limits.max_pending`), so sockets that never authenticate cannot lock users out.

Group isolation: a session only receives frames addressed to its own group,
its own principal, a room of its own group, or everyone; only an admin may
name another group.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs

from wsserver.core.activation_codes import ActivationCodes, CodeRecord
from wsserver.core.admin import HubAdmin
from wsserver.core.commands import (
    ROOM_NAME,
    AddHandler,
    Admit,
    AfterCommit,
    Authenticate,
    CloseAll,
    Command,
    DeleteCode,
    Devices,
    Forget,
    GroupAccounts,
    GroupStats,
    Handle,
    Kick,
    ListCodes,
    Midnight,
    NextMidnight,
    OnlineCount,
    Publish,
    PutCode,
    Reconfigure,
    Release,
    Restore,
    RoomList,
    RoomMembers,
    Stats,
    TakeSnapshot,
    WebsocketStats,
)
from wsserver.core.crm import Crm
from wsserver.core.direct import DirectMessaging
from wsserver.core.host import HostRequest, Sender
from wsserver.core.identity import Identity
from wsserver.core.migrate import STATE_VERSION, migrate
from wsserver.core.session import Handler, Outlet, Principal, Refusal, RoomKey, Session
from wsserver.errors import CloseCode, ErrorCode, ProtocolError
from wsserver.protocol.envelope import Inbound, encode, encode_error, id_key
from wsserver.protocol.i18n import text

if TYPE_CHECKING:
    from wsserver.config import Config

log = logging.getLogger("wsserver.hub")

R = TypeVar("R")

FANOUT_SOON = 32
"""A fan-out to at least this many sessions asks its outlets to deliver "soon":
the network layer then writes the frames from one task, a moment later, and a
connection that meanwhile gets more frames (the next publish) receives them in
one write. Smaller deliveries (a user's own tabs, a direct message) go out at
once."""

class Journal(Protocol):
    """What the hub needs of durable storage (`wsserver.storage` implements it):
    a non-blocking append that numbers records, and how far they are durable."""

    @property
    def durable_upto(self) -> int:
        """The number of the last record that is durable."""

    def append(self, record: dict[str, Any]) -> int:
        """Queue one record for writing; returns its number (never blocks)."""

    def request_snapshot(self, state: dict[str, Any], upto: int) -> None:
        """Queue a snapshot of `state`, which reflects the records up to `upto`."""


class Component(Protocol):
    """A durable part of the hub's state (direct messages, CRM, activation codes)."""

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy for the snapshot."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with one from `to_state()` (start-up only)."""


class InstantJournal:
    """A journal that keeps nothing and is durable at once (no data directory)."""

    def __init__(self) -> None:
        self.durable_upto = 0

    def append(self, record: dict[str, Any]) -> int:
        self.durable_upto += 1
        return self.durable_upto

    def request_snapshot(self, state: dict[str, Any], upto: int) -> None:
        """Nothing to keep."""


class Hub:
    """Shared state and the rules of connections, principals and rooms."""

    def __init__(
        self,
        config: Config,
        clock: Callable[[], float] = time.time,
        storage: Journal | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.storage: Journal = storage if storage is not None else InstantJournal()
        self.appliers: dict[str, Callable[[dict[str, Any]], None]] = {}
        self.on_authenticated: list[Callable[[Session], None]] = []
        self.on_closed: list[Callable[[Session], None]] = []  # after a session is forgotten
        self.last_n = 0  # the journal number of the last record this hub appended
        self._pending: deque[tuple[int, Callable[[], object]]] = deque()
        self.sessions: dict[str, Session] = {}
        # group key -> its authenticated sessions (group broadcasts, CRM dashboards)
        self.by_group: dict[str, dict[str, Session]] = {}
        self.principals: dict[Principal, dict[str, Session]] = {}
        # user id (comparison form) -> the user principals online with it, one
        # per user_type: the HTTP API addresses "user 42" across user types
        self.user_principals: dict[str, dict[Principal, None]] = {}
        self.per_ip: dict[str, int] = {}
        # sessions admitted without an identity yet: capped by `limits.max_pending`,
        # never counted against `limits.max_connections`
        self.unauthenticated = 0
        self.rooms: dict[RoomKey, dict[str, Session]] = {}
        self.codes: dict[str, CodeRecord] = {
            c.code: CodeRecord(c.code, c.group_id, c.name, c.enabled)
            for c in config.activation_codes
        }
        self.messages_in = 0
        self.messages_out = 0
        self.started_at = clock()
        self.handlers: dict[str, Handler] = {
            "join_room": self._join_room,
            "leave_room": self._leave_room,
            "room_message": self._room_message,
            "room_members": self._room_members,
        }
        self.direct = DirectMessaging(self)
        self.crm = Crm(self)
        self.activation_codes = ActivationCodes(self)
        # Durable parts, by their key in the snapshot; each folds its own records
        # (registered in `appliers`) and can dump and reload its state.
        self.components: dict[str, Component] = {
            "messages": self.direct,
            "crm": self.crm,
            "activation_codes": self.activation_codes,
        }
        self.admin = HubAdmin(self)
        self.snapshot_n = -1  # the journal number of the last snapshot queued
        admin = self.admin
        codes = self.activation_codes
        # The one door in (`execute`): each command class and the method that runs it.
        self.commands: dict[type[Command[Any]], Callable[[Any], Any]] = {
            Handle: self._handle,
            Admit: self._admit,
            Authenticate: self._authenticate,
            Forget: self._forget,
            CloseAll: self._close_all,
            Release: self._release,
            AfterCommit: self._after_commit,
            TakeSnapshot: self._take_snapshot,
            Restore: self._restore,
            NextMidnight: self._next_midnight,
            Midnight: self._midnight,
            Reconfigure: self._reconfigure,
            AddHandler: self._add_handler,
            Publish: admin.publish,
            Kick: admin.kick,
            OnlineCount: admin.online_count,
            Devices: admin.devices,
            RoomList: admin.rooms,
            RoomMembers: admin.room_members,
            Stats: admin.stats,
            WebsocketStats: admin.websocket_stats,
            GroupStats: admin.group_stats,
            GroupAccounts: admin.group_accounts,
            ListCodes: lambda cmd: codes.listing(),
            PutCode: lambda cmd: codes.put(cmd.code, cmd.group_id, cmd.name, cmd.enabled),
            DeleteCode: lambda cmd: codes.delete(cmd.code),
        }
        self._host = Sender(self.send, self.now_ms, admin.publish)

    # -- commands ------------------------------------------------------------

    def execute(self, command: Command[R]) -> R:
        """Run one command (the actor's only way in) and return its answer."""
        return self.commands[command.__class__](command)  # type: ignore[no-any-return]

    def _admit(self, cmd: Admit) -> Refusal | Identity | None:
        refusal = self.admit(cmd.outlet, cmd.conn_id, cmd.ip, cmd.user_agent, cmd.identity, cmd.device_id)
        if refusal is not None:
            return refusal
        return self._settled(cmd.conn_id, cmd.identity)

    def _authenticate(self, cmd: Authenticate) -> Refusal | Identity:
        refusal = self.authenticate(cmd.conn_id, cmd.identity, cmd.device_id, cmd.device_info, cmd.request_id)
        if refusal is not None:
            return refusal
        settled = self._settled(cmd.conn_id, cmd.identity)
        assert settled is not None
        return settled

    def _settled(self, conn_id: str, given: Identity | None) -> Identity | None:
        """The identity the hub settled on for an admitted connection (`given`
        when it is already forgotten again)."""
        session = self.sessions.get(conn_id)
        return given if session is None else session.identity

    def _forget(self, cmd: Forget) -> None:
        self.close(cmd.conn_id)

    def _close_all(self, cmd: CloseAll) -> None:
        self.close_all(cmd.code, cmd.reason)

    def _release(self, cmd: Release) -> None:
        self.release()

    def _after_commit(self, cmd: AfterCommit) -> None:
        self.after_commit(cmd.callback)

    def _take_snapshot(self, cmd: TakeSnapshot) -> int:
        n = self.last_n
        if cmd.if_changed and n == self.snapshot_n:
            return n
        self.storage.request_snapshot(self.snapshot_view(), n)
        self.snapshot_n = n
        return n

    def _restore(self, cmd: Restore) -> int:
        self.restore(cmd.state, cmd.records, cmd.version)
        self.snapshot_n = self.last_n  # what was restored counts as taken
        return self.last_n

    def _next_midnight(self, cmd: NextMidnight) -> int:
        return self.crm.ms_to_next_midnight(self.now_ms())

    def _midnight(self, cmd: Midnight) -> None:
        self.crm.midnight()

    def _reconfigure(self, cmd: Reconfigure) -> int:
        if cmd.on_switch is not None:
            cmd.on_switch()
        return self.reconfigure(cmd.config)

    def _add_handler(self, cmd: AddHandler) -> None:
        if cmd.type in self.handlers:
            raise ValueError(f"message type {cmd.type!r} is already handled")
        fn = cmd.fn
        host = self._host

        def handler(session: Session, msg: Inbound) -> None:
            fn(HostRequest(host, session, msg))

        self.handlers[cmd.type] = handler

    # -- durable state -------------------------------------------------------

    def record(self, rec: dict[str, Any]) -> int:
        """Journal one durable change and apply it; returns its journal number."""
        n = self.storage.append(rec)
        rec["n"] = n
        self.appliers[rec["t"]](rec)
        self.last_n = n
        return n

    def after_commit(self, announce: Callable[[], object]) -> None:
        """Run `announce` once every record appended so far is durable.

        Acknowledgements and the pushes they imply go through here, so a
        client never hears of a change that a crash could still take back.
        """
        if not self._pending and self.last_n <= self.storage.durable_upto:
            announce()
        else:  # behind older announcements still waiting: keep their order
            self._pending.append((self.last_n, announce))

    def release(self) -> None:
        """Run the announcements whose records became durable (registry command)."""
        durable = self.storage.durable_upto
        pending = self._pending
        while pending and pending[0][0] <= durable:
            _, announce = pending.popleft()
            try:
                announce()
            except Exception:
                log.exception("announcement failed")

    def restore(
        self, state: dict[str, Any] | None, records: list[dict[str, Any]], version: int = STATE_VERSION
    ) -> None:
        """Rebuild durable state at start-up: the snapshot, then the journal.

        `version` is the format they were written in; an older one is migrated
        first (`core.migrate`), and the caller then snapshots the result before
        appending anything, so the journal never mixes formats. (The caller
        pauses the cyclic GC meanwhile: nothing made here is garbage.)
        """
        if version != STATE_VERSION:
            state, records = migrate(state, records, version)
        if state is not None:
            for name, component in self.components.items():
                if name in state:
                    component.load_state(state[name])
            self.last_n = state.get("n", 0)
        appliers = self.appliers
        last_n = self.last_n
        try:
            for rec in records:
                appliers[rec["t"]](rec)
                n = rec.get("n", 0)
                if n > last_n:
                    last_n = n
        finally:
            self.last_n = last_n
            if isinstance(self.storage, InstantJournal):  # numbers go on after the restored ones
                self.storage.durable_upto = max(self.storage.durable_upto, last_n)

    def snapshot_state(self) -> dict[str, Any]:
        """A detached copy of all durable state, for `storage.request_snapshot`."""
        state: dict[str, Any] = {"n": self.last_n}
        for name, component in self.components.items():
            state[name] = component.to_state()
        return state

    def snapshot_view(self) -> dict[str, Any]:
        """What `snapshot_state()` gives, for the snapshot writer: components with a
        `snapshot_view()` (the message store) hand over their never-changed parts
        without copying them; the storage encodes the view with
        `storage.base.json_chunks`. This runs in the registry: with a million
        stored messages the copy took it 3.6–5.9 s."""
        state: dict[str, Any] = {"n": self.last_n}
        for name, component in self.components.items():
            view = getattr(component, "snapshot_view", None)
            state[name] = view() if view is not None else component.to_state()
        return state

    # -- small helpers -------------------------------------------------------

    def now_ms(self) -> int:
        """Wall-clock milliseconds for `timestamp` fields."""
        return int(self.clock() * 1000)

    def text(self, key: str, **params: object) -> str:
        """A catalogue text in the configured locale."""
        return text(key, self.config.server.locale, **params)

    def group_id(self, key: str, given: Any = None) -> Any:
        """A group's id as replies and pushes echo it (SPEC 2: as it came): as the
        group's connections carry it (their tokens; a desktop client's is its
        code's), else as an activation code of the group has it, else `given`
        (the request's), else the comparison form itself (None for no group).
        One rule, so that two answers about the same group never differ in type."""
        members = self.by_group.get(key)
        if members:
            ident = next(iter(members.values())).identity
            if ident is not None:
                return ident.group_id
        for record in self.codes.values():
            if id_key(record.group_id) == key:
                return record.group_id
        if given is not None:
            return given
        return key or None

    def send(self, session: Session, frame: str | bytes) -> bool:
        """Hand one frame to one session."""
        if session.outlet.deliver(frame):
            self.messages_out += 1
            return True
        return False

    def reply(self, session: Session, msg: Inbound, mtype: str, data: Any) -> None:
        """Answer `msg` on its connection, echoing its `id`."""
        self.send(session, encode(mtype, data, self.now_ms(), request_id=msg.id))

    def send_error(self, session: Session, err: ProtocolError, msg: Inbound | None) -> None:
        """Send an `error` for `err` to one session."""
        frame = encode_error(
            err,
            msg.type if msg else None,
            self.now_ms(),
            locale=self.config.server.locale,
            request_id=msg.id if msg else None,
        )
        self.send(session, frame)

    def fan_out(self, sessions: Any, frame: str, skip: Session | None = None) -> int:
        """Deliver one encoded frame to many sessions; returns how many took it."""
        n = 0
        targets = list(sessions)  # a copy: a delivery may close a connection
        soon = len(targets) >= FANOUT_SOON
        for s in targets:
            if s is not skip and s.outlet.deliver(frame, soon):
                n += 1
        self.messages_out += n
        return n

    # -- connection lifecycle ------------------------------------------------

    def admit(
        self,
        outlet: Outlet,
        conn_id: str,
        ip: str,
        user_agent: str = "",
        identity: Identity | None = None,
        device_id: str | None = None,
        device_info: Any = None,
    ) -> Refusal | None:
        """Take a new connection, or say why not (per-IP limit; without an identity
        the cap on unauthenticated connections, with one everything `authenticate`
        checks). Connections still to authenticate have their own cap so that
        they can never fill `max_connections` and lock users out."""
        limits = self.config.limits
        if identity is None:
            if self.unauthenticated >= limits.max_pending:
                return Refusal(503, CloseCode.OVER_CAPACITY, "too_many_pending")
        elif self._full():
            return Refusal(503, CloseCode.OVER_CAPACITY, "over_capacity")
        if limits.max_connections_per_ip and self.per_ip.get(ip, 0) >= limits.max_connections_per_ip:
            return Refusal(429, CloseCode.OVER_CAPACITY, "too_many_ip_connections")
        session = Session(conn_id, outlet, ip, user_agent, self.clock())
        self.sessions[conn_id] = session
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        self.unauthenticated += 1
        if identity is not None:
            refusal = self.authenticate(conn_id, identity, device_id, device_info)
            if refusal is not None:
                self.close(conn_id)
                return refusal
        return None

    def _full(self) -> bool:
        """True when authenticated sessions reach `limits.max_connections`."""
        limit = self.config.limits.max_connections
        return bool(limit) and len(self.sessions) - self.unauthenticated >= limit

    def authenticate(
        self,
        conn_id: str,
        identity: Identity,
        device_id: str | None = None,
        device_info: Any = None,
        request_id: Any = None,
    ) -> Refusal | None:
        """Bind an admitted connection to its principal and greet it.

        Activation codes are checked here (they are shared state), and
        `limits.max_connections` (authenticated sessions only). The
        per-principal limit evicts the oldest connection (4004) or refuses.
        """
        session = self.sessions.get(conn_id)
        if session is None or self._full():
            return Refusal(503, CloseCode.OVER_CAPACITY, "over_capacity")
        if session.identity is not None:  # (the connection never asks twice)
            return Refusal(409, CloseCode.POLICY, "already_authenticated")
        if identity.is_device:
            record = self.codes.get(identity.activation_code or "")
            if record is None:
                return Refusal(401, CloseCode.AUTH_FAILED, "activation_code_invalid")
            if not record.enabled:
                return Refusal(401, CloseCode.AUTH_FAILED, "activation_code_disabled")
            identity = attrs.evolve(identity, group_id=record.group_id)  # the code's group
        principal = identity.principal
        mine = self.principals.get(principal, {})
        limit = self.config.limits.max_connections_per_user
        if limit and len(mine) >= limit:
            if self.config.limits.per_user_policy == "reject":
                return Refusal(429, CloseCode.OVER_CAPACITY, "too_many_user_connections")
            while len(mine) >= limit:
                oldest = next(iter(mine.values()))
                oldest.outlet.close(CloseCode.REPLACED, "replaced")
                self.close(oldest.conn_id)
                mine = self.principals.get(principal, {})
        session.identity = identity
        self.unauthenticated -= 1
        session.device_id = device_id
        session.device_info = device_info
        self.principals.setdefault(principal, {})[conn_id] = session
        self.by_group.setdefault(identity.group_key, {})[conn_id] = session
        if not identity.is_device:
            self.user_principals.setdefault(principal[2], {})[principal] = None
        self._greet(session, request_id)
        for hook in self.on_authenticated:
            hook(session)
        return None

    def _greet(self, session: Session, request_id: Any) -> None:
        ident = session.identity
        assert ident is not None
        if ident.is_device:
            data = {
                "group_id": ident.group_id,
                "activation_code": ident.activation_code,
                "message": self.text("auth_success"),
            }
            mtype = "auth_success"
        else:
            data = {
                "user_id": ident.user_id,
                "group_id": ident.group_id,
                "conn_id": session.conn_id,
                "message": self.text("connected"),
            }
            if ident.user_type is not None:
                data["user_type"] = ident.user_type
            if session.device_id is not None:
                data["device_id"] = session.device_id
            mtype = "connected"
        self.send(session, encode(mtype, data, self.now_ms(), request_id=request_id))

    def close(self, conn_id: str) -> None:
        """Forget a connection and everything it held (rooms, presence). Idempotent.

        Runs as soon as a close is decided, whoever decides it (the connection,
        the hub, an admin), not when the socket is done: a connection on its way
        out is in no room, online for no one and counted in no limit."""
        session = self.sessions.pop(conn_id, None)
        if session is None:
            return
        if session.identity is None:
            self.unauthenticated -= 1
        left = self.per_ip.get(session.ip, 0) - 1
        if left > 0:
            self.per_ip[session.ip] = left
        else:
            self.per_ip.pop(session.ip, None)
        for key in list(session.rooms):
            self._leave(session, key)
        principal = session.principal
        if principal is not None:
            assert session.identity is not None
            members = self.by_group.get(session.identity.group_key)
            if members is not None:
                members.pop(conn_id, None)
                if not members:
                    del self.by_group[session.identity.group_key]
            mine = self.principals.get(principal)
            if mine is not None:
                mine.pop(conn_id, None)
                if not mine:
                    del self.principals[principal]
                    self._forget_user_principal(principal)
            for hook in self.on_closed:
                try:
                    hook(session)
                except Exception:
                    log.exception("close hook failed for connection %s", conn_id)

    def _forget_user_principal(self, principal: Principal) -> None:
        if principal[0] != "user":
            return
        others = self.user_principals.get(principal[2])
        if others is not None:
            others.pop(principal, None)
            if not others:
                del self.user_principals[principal[2]]

    def reconfigure(self, config: Config) -> int:
        """Run with `config` from now on (a reload) and rebuild the activation codes
        from it and the durable overrides; connections whose code is now gone,
        disabled or moved to another group are closed with 4001. Returns how many."""
        before = self.codes
        self.config = config
        self.activation_codes.rebuild()
        closed = 0
        for code, old in before.items():
            new = self.codes.get(code)
            if new is None:
                closed += self.activation_codes._close_live(code, "activation_code_invalid")
            elif not new.enabled or str(new.group_id) != str(old.group_id):
                closed += self.activation_codes._close_live(code, "activation_code_disabled")
        return closed

    def close_all(self, code: int, reason: str) -> None:
        """Ask every connection to close (server shutdown)."""
        for session in list(self.sessions.values()):
            session.outlet.close(code, reason)

    # -- inbound messages ----------------------------------------------------

    def handle(self, conn_id: str, msg: Inbound) -> None:
        """Route one authenticated client message. Errors go back to its sender only."""
        self._handle(Handle(conn_id, msg))

    def _handle(self, cmd: Handle) -> None:
        """`Handle`: the per-message command, run straight from the command table."""
        msg = cmd.msg
        conn_id = cmd.conn_id
        session = self.sessions.get(conn_id)
        if session is None or session.identity is None:
            return
        self.messages_in += 1
        handler = self.handlers.get(msg.type)
        try:
            if handler is None:
                raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "unknown_type", type=msg.type)
            handler(session, msg)
        except ProtocolError as err:
            self.send_error(session, err, msg)
        except Exception:
            # A bug must cost one message, not the hub: the sender hears `internal`.
            log.exception("handler for %r failed on connection %s", msg.type, conn_id)
            self.send_error(session, ProtocolError(ErrorCode.INTERNAL, "internal"), msg)

    # -- rooms (SPEC 4.2) ----------------------------------------------------

    def _room_target(self, session: Session, data: Any) -> RoomKey:
        """The (group, room) a room request names, checked for name and group."""
        ident = session.identity
        assert ident is not None
        room: Any
        group: Any
        if isinstance(data, str):
            room, group = data, None
        elif isinstance(data, dict):
            room, group = data.get("room"), data.get("group_id")
        else:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_missing", field="room")
        if room is None:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_missing", field="room")
        if not isinstance(room, str) or not ROOM_NAME.fullmatch(room):
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "invalid_room", field="room")
        if ident.is_device:
            raise ProtocolError(ErrorCode.FORBIDDEN, "device_no_rooms", field="room")
        group_key = ident.group_key
        if group is not None and id_key(group) != group_key:
            if not ident.is_admin:
                raise ProtocolError(ErrorCode.FORBIDDEN, "group_forbidden", field="group_id")
            group_key = id_key(group)
        return (group_key, room)

    def may_join(self, identity: Identity, room: str) -> bool:
        """`rooms.allow` patterns, and the token's `rooms` claim when it has one."""
        if not any(fnmatchcase(room, p) for p in self.config.rooms.allow):
            return False
        if identity.rooms is not None and not identity.is_admin:
            return any(fnmatchcase(room, p) for p in identity.rooms)
        return True

    def members(self, key: RoomKey) -> list[dict[str, Any]]:
        """A room's members, one entry per principal with its connection count."""
        out: dict[Principal, dict[str, Any]] = {}
        for s in self.rooms.get(key, {}).values():
            ident = s.identity
            assert ident is not None
            entry = out.get(ident.principal)
            if entry is None:
                entry = out[ident.principal] = {
                    "user_id": ident.user_id,
                    "username": ident.username,
                    "user_type": ident.user_type,
                    "connections": 0,
                }
            entry["connections"] += 1
        return list(out.values())

    def _principal_in_room(self, key: RoomKey, principal: Principal, skip: Session) -> bool:
        return any(
            s is not skip and s.principal == principal for s in self.rooms.get(key, {}).values()
        )

    def _presence(self, key: RoomKey, session: Session, mtype: str) -> None:
        if not self.config.rooms.presence_events:
            return
        ident = session.identity
        assert ident is not None
        frame = encode(
            mtype,
            {"room": key[1], "user_id": ident.user_id, "username": ident.username},
            self.now_ms(),
        )
        self.fan_out(self.rooms.get(key, {}).values(), frame, skip=session)

    def _join_room(self, session: Session, msg: Inbound) -> None:
        key = self._room_target(session, msg.data)
        assert session.identity is not None
        if not self.may_join(session.identity, key[1]):
            raise ProtocolError(ErrorCode.FORBIDDEN, "room_forbidden", field="room")
        members = self.rooms.get(key)
        if key not in session.rooms:
            limits = self.config.limits
            if limits.max_rooms_per_connection and len(session.rooms) >= limits.max_rooms_per_connection:
                raise ProtocolError(ErrorCode.CONFLICT, "too_many_rooms", field="room")
            if limits.max_room_members and members and len(members) >= limits.max_room_members:
                raise ProtocolError(ErrorCode.CONFLICT, "room_full", field="room")
            first_of_principal = not self._principal_in_room(key, session.principal, session)  # type: ignore[arg-type]
            self.rooms.setdefault(key, {})[session.conn_id] = session
            session.rooms.add(key)
            if first_of_principal:
                self._presence(key, session, "user_joined")
        self.reply(session, msg, "room_joined", {"room": key[1], "members": self.members(key)})

    def _leave(self, session: Session, key: RoomKey) -> None:
        session.rooms.discard(key)
        members = self.rooms.get(key)
        if members is None or members.pop(session.conn_id, None) is None:
            return
        if not members:
            del self.rooms[key]
        elif not self._principal_in_room(key, session.principal, session):  # type: ignore[arg-type]
            self._presence(key, session, "user_left")

    def _leave_room(self, session: Session, msg: Inbound) -> None:
        key = self._room_target(session, msg.data)
        if key not in session.rooms:
            raise ProtocolError(ErrorCode.NOT_FOUND, "not_in_room", field="room")
        self._leave(session, key)
        self.reply(session, msg, "room_left", {"room": key[1]})

    def _room_message(self, session: Session, msg: Inbound) -> None:
        if not isinstance(msg.data, dict):
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_type", field="data")
        key = self._room_target(session, msg.data)
        if key not in session.rooms:
            raise ProtocolError(ErrorCode.FORBIDDEN, "not_in_room", field="room")
        ident = session.identity
        assert ident is not None
        payload = {k: v for k, v in msg.data.items() if k not in ("room", "group_id", "from")}
        payload["room"] = key[1]
        payload["from"] = {
            "user_id": ident.user_id,
            "username": ident.username,
            "user_type": ident.user_type,
        }
        frame = encode("room_message", payload, self.now_ms())
        delivered = self.fan_out(self.rooms[key].values(), frame, skip=session)
        self.reply(session, msg, "room_message_ack", {"room": key[1], "delivered": delivered})

    def _room_members(self, session: Session, msg: Inbound) -> None:
        key = self._room_target(session, msg.data)
        assert session.identity is not None
        if key not in session.rooms and not self.may_join(session.identity, key[1]):
            raise ProtocolError(ErrorCode.FORBIDDEN, "room_forbidden", field="room")
        self.reply(session, msg, "room_members", {"room": key[1], "members": self.members(key)})

    # -- stats ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts for `/api/stats` and health checks."""
        devices = sum(1 for s in self.sessions.values() if s.identity and s.identity.is_device)
        users = sum(1 for s in self.sessions.values() if s.identity and not s.identity.is_device)
        return {
            "connections": len(self.sessions),
            "user_connections": users,
            "device_connections": devices,
            "pending_connections": len(self.sessions) - users - devices,
            "principals": len(self.principals),
            "rooms": len(self.rooms),
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
        }

