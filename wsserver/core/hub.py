"""The hub: its components composed, the rules of connections, and its door.

A `Hub` is made of components with explicit interfaces, each given the
collaborators it needs at construction and nothing more:

    Env              the live config, the clock, catalogue texts   (core.env)
    CommitLog        records, snapshots, announcements held until durable
                                                                   (core.commit)
    Presence         who is connected where                        (core.presence)
    Broker           every frame leaves through it                 (core.broker)
    Rooms            room rules and handlers                       (core.rooms)
    ActivationCodes  the effective codes and their overrides       (core.activation_codes)
    DirectMessaging  direct messages, receipts, mailboxes          (core.direct)
    Crm              the seed-000 workflow                         (core.crm)
    CrmReads         its records paged for the HTTP API            (core.crm_reads)
    TaskStates       the latest state of each user's tasks         (core.tasks)
    Webhooks         events for the business backend, the outbox   (core.webhooks)
    HubAdmin         the HTTP API's and the host's commands        (core.admin)

The hub itself keeps the rules that span them: admitting, authenticating and
forgetting connections (limits, eviction, the greeting, the hooks components
run on those events: `core.connection_rules.ConnectionRules`, which `Hub`
extends), routing each client message to its handler, and the one door in:
`execute(command)`, one table from command class (`core.commands`) to the
method that runs it. Exactly one task, the hub
actor (`wsserver.net.actor`), owns a `Hub` and calls `execute`; nothing else
holds it, so there are no locks.

In cluster mode (`cluster`: the hand-overs to the network layer) the
presence and broker are the cluster's (`core.cluster_presence`,
`core.cluster_broker`), and the hub also runs the other nodes' deliveries,
kicks and closes (`Deliver`, `CloseConnection`) and a dead node's
`user_offline` events (`NodeGone`).

A `Hub` never blocks and never does I/O: it hands frames to `Outlet`s, whose
`deliver()` must not block (the trio shell puts them into a bounded queue and
closes a connection that cannot keep up with 4008).

Group isolation: a session only receives frames addressed to its own group,
its own principal, a room of its own group, or everyone; only an admin may
name another group.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from wsserver.core.activation_codes import ActivationCodes
from wsserver.core.admin import HubAdmin
from wsserver.core.admin_commands import (
    Devices,
    GroupAccounts,
    GroupStats,
    Kick,
    MailboxSize,
    OnlineCount,
    RoomList,
    RoomMembers,
    Stats,
    WebsocketStats,
)
from wsserver.core.backend_send import send_as
from wsserver.core.broker import Broker, LocalBroker
from wsserver.core.cluster_broker import ClusterBroker, ClusterOutlets
from wsserver.core.cluster_commands import ClusterCommands
from wsserver.core.cluster_presence import ClusterPresence
from wsserver.core.commands import (
    AddHandler,
    Admit,
    AfterCommit,
    AfterStored,
    Authenticate,
    CloseAll,
    CloseSession,
    Command,
    DeleteCode,
    Forget,
    Handle,
    ListCodes,
    Midnight,
    NextMidnight,
    OpenSession,
    Publish,
    PutCode,
    Reconfigure,
    Release,
    Restore,
    SendAs,
    TakeSnapshot,
    UpdateDevice,
)
from wsserver.core.commit import CommitLog, InstantJournal, Journal
from wsserver.core.connection_rules import ConnectionRules
from wsserver.core.crm import Crm
from wsserver.core.crm_reads import CrmReads
from wsserver.core.devices import DeviceKick
from wsserver.core.direct import DirectMessaging
from wsserver.core.env import Env
from wsserver.core.host import Request, Sender
from wsserver.core.identity import Identity
from wsserver.core.log_commands import ApplyLog, JoinLog, LogRefused
from wsserver.core.migrate import STATE_VERSION
from wsserver.core.presence import LocalPresence, Presence
from wsserver.core.replicated import Replicated
from wsserver.core.rooms import Rooms
from wsserver.core.session import Handler, Refusal, Session
from wsserver.core.sessions import ChatSessions, sending_by_session
from wsserver.core.tasks import TaskStates
from wsserver.core.watch import PresenceWatch
from wsserver.core.webhooks import Webhooks
from wsserver.errors import ErrorCode, ProtocolError
from wsserver.protocol.envelope import Inbound, id_key

if TYPE_CHECKING:
    from wsserver.config import Config

__all__ = ["Hub", "InstantJournal", "Journal"]

log = logging.getLogger("wsserver.hub")

R = TypeVar("R")


class Hub(ConnectionRules):
    """The hub's components, the rules of connections (`ConnectionRules`), and
    its command door."""

    def __init__(
        self,
        config: Config,
        clock: Callable[[], float] = time.time,
        storage: Journal | None = None,
        cluster: ClusterOutlets | None = None,
    ) -> None:
        self.env = env = Env(config, clock)
        self.commit = commit = CommitLog(storage)
        # in a cluster (`cluster`: the hand-overs to the other nodes) the cluster's
        # presence and broker: local ones that also tell the others
        local = LocalPresence() if cluster is None else ClusterPresence(cluster.presence)
        self.presence: Presence = local
        presence = self.presence
        self.cluster = None if cluster is None else ClusterBroker(local, env, cluster.bus)
        self.broker: Broker = LocalBroker(local, env) if self.cluster is None else self.cluster
        broker = self.broker
        self._sessions = presence.sessions  # (read per message; never replaced)
        self.rooms = Rooms(presence, broker, env)
        self.activation_codes = ActivationCodes(commit, presence, env, forget=self.close)
        self.direct = DirectMessaging(commit, presence, broker, env)
        self.crm = Crm(commit, presence, broker, env, self.activation_codes, group_id=self.group_id)
        self.crm_reads = CrmReads(self.crm.store, self.group_id)
        self.tasks = TaskStates(commit, broker, env)
        self.sessions = sessions = ChatSessions(commit)
        self.watch = PresenceWatch(presence, broker, env, self.rooms.others)
        devices = DeviceKick(presence, broker, env, forget=self.close)
        self.webhooks = webhooks = Webhooks(
            commit, presence, env, self.direct.store, group_id=self.group_id, crm=self.crm.store
        )
        self.admin = admin = HubAdmin(
            presence,
            broker,
            env,
            self.rooms,
            self.direct,
            self.crm,
            forget=self.close,
            group_id=self.group_id,
            counters=self.stats,
        )
        # Durable parts, by their key in the snapshot; each folds its own records.
        commit.register("messages", self.direct)
        commit.register("crm", self.crm)
        commit.register("activation_codes", self.activation_codes)
        commit.register("tasks", self.tasks)
        commit.register("webhooks", webhooks)
        commit.register("sessions", sessions)
        # undelivered checks and `message` events follow the direct messages' records
        # (always folded: a journal's stamped records make their events whatever the config)
        commit.observe(webhooks.observed_types, webhooks.observe)
        if webhooks.stamped_types:  # `message` events: stamped into their records
            commit.stamp(webhooks.stamped_types, webhooks.stamp)
            commit.follow(webhooks.stamped_types, webhooks.made)
        if webhooks.followed_types:  # events made from messages' and the CRM's records
            commit.follow(webhooks.followed_types, webhooks.follow)
        self.handlers: dict[str, Handler] = {
            **self.rooms.handlers,
            **self.direct.handlers,
            **self.crm.handlers,
            **self.watch.handlers,
            **devices.handlers,
        }
        self.handlers["send_message"] = sending_by_session(sessions, self.direct, self.handlers["send_message"])
        # what the components do when a connection authenticates / is forgotten
        self.on_authenticated: list[Callable[[Session], None]] = [
            self.tasks.greet,
            self.direct.deliver_mailbox,
            self.crm.greet_dashboard,
            webhooks.connected,
            self.watch.changed,
        ]
        self.on_closed: list[Callable[[Session], None]] = [self.crm.desktop_gone, webhooks.closed, self.watch.closed]
        self.messages_in = 0
        codes = self.activation_codes
        # The one door in (`execute`): each command class and the method that runs it.
        self.commands: dict[type[Command[Any]], Callable[[Any], Any]] = {
            Handle: self._handle,
            Admit: self._admit,
            Authenticate: self._authenticate,
            UpdateDevice: devices.update,
            OpenSession: lambda cmd: sessions.open(cmd.session_id, cmd.group_id, cmd.participants, env.now_ms()),
            CloseSession: lambda cmd: sessions.close(cmd.session_id, cmd.group_id),
            Forget: lambda cmd: self.close(cmd.conn_id),
            CloseAll: lambda cmd: self.close_all(cmd.code, cmd.reason),
            Release: lambda cmd: commit.release(),
            AfterCommit: lambda cmd: commit.after_commit(cmd.callback),
            AfterStored: lambda cmd: commit.after_stored(cmd.callback),
            TakeSnapshot: lambda cmd: commit.take_snapshot(cmd.if_changed),
            Restore: self._restore,
            NextMidnight: lambda cmd: self.crm.ms_to_next_midnight(env.now_ms()),
            Midnight: lambda cmd: self.crm.midnight(),
            Reconfigure: self._reconfigure,
            AddHandler: self._add_handler,
            Publish: admin.publish,
            SendAs: lambda cmd: send_as(self.handlers["send_message"], cmd, env.clock()),
            Kick: admin.kick,
            OnlineCount: admin.online_count,
            MailboxSize: admin.mailbox_size,
            Devices: admin.devices,
            RoomList: admin.room_list,
            RoomMembers: admin.room_members,
            Stats: admin.stats,
            WebsocketStats: admin.websocket_stats,
            GroupStats: admin.group_stats,
            GroupAccounts: admin.group_accounts,
            ListCodes: lambda cmd: codes.listing(),
            PutCode: lambda cmd: codes.put(cmd.code, cmd.group_id, cmd.name, cmd.enabled),
            DeleteCode: lambda cmd: codes.delete(cmd.code),
            **self.tasks.commands,
            **self.crm_reads.commands,
            **webhooks.commands,
            JoinLog: self._join_log,
            ApplyLog: self._apply_log,
            LogRefused: lambda cmd: commit.log_failed(cmd.tokens),
        }
        if self.cluster is not None:
            cluster_commands = ClusterCommands(self.cluster, local, env, admin, webhooks, self.close, self.rooms)
            self.commands.update(cluster_commands.commands)
        self._host = Sender(broker.send, broker.reply, env.now_ms, admin.publish)

    # -- the door --------------------------------------------------------------

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
        session = self.presence.sessions.get(conn_id)
        return given if session is None else session.identity

    def _restore(self, cmd: Restore) -> int:
        if cmd.node:
            self.env.node = cmd.node
        self.restore(cmd.state, cmd.records, cmd.version)
        return self.commit.last_n

    def _join_log(self, cmd: JoinLog) -> None:
        self.commit.clustered(Replicated(cmd.origin, cmd.hand_off), cmd.snapshot)

    def _apply_log(self, cmd: ApplyLog) -> None:
        cluster = self.commit.cluster
        assert cluster is not None, "JoinLog first"
        cluster.live = cmd.live
        if cmd.since is not None:
            cluster.last_id = cmd.since
            if cmd.live:  # reloaded from a snapshot: what was in flight cannot be told apart
                self.commit.log_failed(list(cluster.waiting))
        self.commit.apply_log(cmd.entries)

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
            request = Request(host, session, msg)
            fn(request)
            if msg.id is not None and not request.answered:  # every `id` gets one reply
                self.broker.reply(session, msg, "ack", {"ok": True})

        self.handlers[cmd.type] = handler

    # -- the components' state, as the hub's -------------------------------------

    @property
    def config(self) -> Config:
        """The running configuration."""
        return self.env.config

    @property
    def last_n(self) -> int:
        """The journal number of the last record appended (or restored)."""
        return self.commit.last_n

    def now_ms(self) -> int:
        """Wall-clock milliseconds for `timestamp` fields."""
        return self.env.now_ms()

    def release(self) -> None:
        """Run the announcements whose records became durable."""
        self.commit.release()

    def restore(
        self, state: dict[str, Any] | None, records: list[dict[str, Any]], version: int = STATE_VERSION
    ) -> None:
        """Rebuild durable state at start-up (`CommitLog.restore`)."""
        self.commit.restore(state, records, version)

    def snapshot_state(self) -> dict[str, Any]:
        """A detached copy of all durable state (`CommitLog.snapshot_state`)."""
        return self.commit.snapshot_state()

    def snapshot_view(self) -> dict[str, Any]:
        """All durable state for the snapshot writer (`CommitLog.snapshot_view`)."""
        return self.commit.snapshot_view()

    def group_id(self, key: str, given: Any = None) -> Any:
        """A group's id as replies and pushes echo it (SPEC 2: as it came): as the
        group's connections carry it (their tokens; a desktop client's is its
        code's), else as an activation code of the group has it, else `given`
        (the request's), else the comparison form itself (None for no group).
        One rule, so that two answers about the same group never differ in type."""
        members = self.presence.of_group(key)
        if members:
            ident = next(iter(members.values())).identity
            if ident is not None:
                return ident.group_id
        record = self.activation_codes.of_group(lambda group_id: id_key(group_id) == key)
        if record is not None:
            return record.group_id
        if given is not None:
            return given
        return key or None

    # -- the configuration ---------------------------------------------------

    def reconfigure(self, config: Config) -> int:
        """Run with `config` from now on (a reload) and rebuild the activation codes
        from it and the durable overrides; connections whose code is now gone,
        disabled or moved to another group are closed with 4001. Returns how many."""
        self.env.config = config
        return self.activation_codes.reconfigured()

    # -- inbound messages ----------------------------------------------------

    def handle(self, conn_id: str, msg: Inbound) -> None:
        """Route one authenticated client message. Errors go back to its sender only."""
        self._handle(Handle(conn_id, msg))

    def _handle(self, cmd: Handle) -> None:
        """`Handle`: the per-message command, run straight from the command table."""
        msg = cmd.msg
        conn_id = cmd.conn_id
        session = self._sessions.get(conn_id)
        if session is None or session.identity is None:
            return
        self.messages_in += 1
        handler = self.handlers.get(msg.type)
        try:
            if handler is None:
                raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "unknown_type", type=msg.type)
            handler(session, msg)
        except ProtocolError as err:
            self.broker.send_error(session, err, msg)
        except Exception:
            # A bug must cost one message, not the hub: the sender hears `internal`.
            log.exception("handler for %r failed on connection %s", msg.type, conn_id)
            self.broker.send_error(session, ProtocolError(ErrorCode.INTERNAL, "internal"), msg)

    # -- stats ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The hub's own counts (`HubAdmin.stats` reports them with the rest)."""
        presence = self.presence
        devices = users = 0
        for s in presence.sessions.values():
            if s.identity is not None:
                if s.identity.is_device:
                    devices += 1
                else:
                    users += 1
        total = len(presence.sessions)
        return {
            "connections": total,
            "user_connections": users,
            "device_connections": devices,
            "pending_connections": total - users - devices,
            "principals": presence.principal_count(),
            "rooms": len(presence.room_keys()),
            "messages_in": self.messages_in,
            "messages_out": self.broker.messages_out,
        }
