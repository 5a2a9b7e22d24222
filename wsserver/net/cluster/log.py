"""The shared log of a cluster node: the durable state's one Redis Stream.

`ClusterLog` is the bridge between the hub actor and Redis for durable state
(docs/CLUSTER.md, "Durable state"; the hub's side is `core.replicated`):

- Start-up: the latest snapshot (`<prefix>:snapshot`, a hash of `state`, the
  log `id` it covers and the state's `version`) is restored, then every
  record of `<prefix>:log` after that id is applied, without live effects,
  before the hub actor runs. The local data directory keeps only the node id.
- The writer task takes the records the hub hands off (`hand_off`, a
  non-blocking send into a bounded channel) and XADDs them in order, the
  records waiting at that moment together in one MULTI/EXEC, so each batch
  is stored whole or not at all. A record is durable once Redis acknowledged
  it (as durable as Redis's `appendfsync` makes it). When Redis refuses or is
  unreachable, the batch's origins hear `unavailable` (`LogRefused`), the hub
  refuses new records at once (`available` is false) until a PING answers
  again (so does a write not answered within WRITE_TIMEOUT).
- The reader task reads the stream in order from the last id it applied
  (XREAD BLOCK with a large COUNT, and how far the log was trimmed read
  behind it in the same round trip) and has the hub apply each batch
  (`ApplyLog`); after a connection failure it reconnects and resumes from
  that id.
- The writer's and the reader's commands, one round trip per batch and per
  wake-up, go over plain RESP connections of their own (`resp.RespClient`:
  coredis's machinery per command cost more CPU than the rest of a record's
  path); start-up, snapshots, compaction and the health PING use coredis.
- Compaction: every `storage.snapshot_interval` the node that takes the short
  lock (`<prefix>:snapshot:lock`, SET NX PX) has the hub take a snapshot,
  stores it if it is newer than the stored one and trims the log below the
  snapshot it replaces (XTRIM MINID, in one script): a node one interval
  behind still finds every record after its position. Each read also
  says whether the log was trimmed past the node's position (the hash's
  `trimmed`: it could not read, or was too slow, for a whole interval), and
  the node then reloads the snapshot.

coredis is imported only here (and by `resp` for the URL), and this module
only when `cluster.redis_url` is set.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import trio

from wsserver._version import STATE_VERSION
from wsserver.core.commands import Restore, TakeSnapshot
from wsserver.core.log_commands import ApplyLog, JoinLog, LogRefused
from wsserver.net.cluster.link import receive_batch
from wsserver.net.cluster.resp import Arg, RespClient, RespError
from wsserver.storage.base import json_chunks
from wsserver.storage.gcpause import gc_paused
from wsserver.storage.node import node_id

if TYPE_CHECKING:
    from wsserver.config import Config
    from wsserver.net.actor import HubActor
    from wsserver.ops.background import Background

__all__ = ["ClusterLog"]

log = logging.getLogger("wsserver.cluster")

OUTBOX = 8192  # records handed off and not yet written: beyond, `unavailable`
BATCH = 256  # records per MULTI/EXEC, per XREAD
BLOCK_MS = 2000
RETRY = 0.2  # seconds between reconnection attempts
WRITE_TIMEOUT = 5.0  # seconds: a write Redis has not answered by then failed (`unavailable`)
READ_TIMEOUT = BLOCK_MS / 1000 + 5.0  # seconds: a read not answered by then failed (reconnect)


def encode(rec: dict[str, Any]) -> bytes:
    """A record as one stream entry's JSON (the stdlib for what orjson refuses)."""
    try:
        return orjson.dumps(rec)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(rec, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass")


def decode(data: bytes) -> dict[str, Any]:
    """A stream entry's record (integers over 64 bits through the stdlib)."""
    try:
        return orjson.loads(data)  # type: ignore[no-any-return]
    except orjson.JSONDecodeError:
        return json.loads(data.decode("utf-8", "surrogatepass"))  # type: ignore[no-any-return]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ClusterLog:
    """The durable state of a cluster node, through Redis (module docstring)."""

    def __init__(self, actor: HubActor, config: Callable[[], Config], background: Background) -> None:
        self.actor = actor
        self.background = background  # Redis unreachable: `/readyz` names "cluster.log"
        self.config = config  # the running configuration (a reload may change it)
        cfg = config().cluster
        self.url = cfg.redis_url
        self.stream = f"{cfg.prefix}:log"
        self.snapshot_key = f"{cfg.prefix}:snapshot"
        self.lock_key = f"{cfg.prefix}:snapshot:lock"
        self.available = False
        self.origin = ""
        self.last_id = "0-0"
        self._nx: Any = None
        self._lost = trio.Event()  # set while Redis is unreachable
        self._out_send, self._out_receive = trio.open_memory_channel[dict[str, Any]](OUTBOX)
        self._snap_send, self._snap_receive = trio.open_memory_channel[tuple[dict[str, Any], str]](1)

    # -- the hub's side (called in the hub actor, never blocks) ---------------------

    def hand_off(self, rec: dict[str, Any]) -> bool:
        """Queue `rec` for the log; False (the sender hears `unavailable`) while
        Redis is unreachable or the queue is full."""
        if not self.available:
            return False
        try:
            self._out_send.send_nowait(rec)
        except trio.WouldBlock:
            return False
        return True

    def snapshot(self, state: dict[str, Any], last_id: str) -> None:
        """A snapshot the hub took: stored by the snapshot task (one at a time)."""
        try:
            self._snap_send.send_nowait((state, last_id))
        except trio.WouldBlock:
            pass  # one is being written; the next interval takes another

    # -- tasks ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the state from Redis (before the hub actor runs), then write,
        read and compact until cancelled."""
        import coredis
        from coredis.retry import NoRetryPolicy

        self._nx = coredis.PureToken.NX

        actor = self.actor
        node = node_id(self.config().storage.dir)
        self.origin = f"{node}:{uuid.uuid4().hex[:8]}"
        actor.execute_now(JoinLog(self.origin, self.hand_off, self.snapshot))
        # a write is never retried by the client: a lost reply would store it twice
        writer: Any = coredis.Redis.from_url(self.url, retry_policy=NoRetryPolicy())
        reader: Any = coredis.Redis.from_url(self.url)
        async with writer, reader:
            await self._load(reader, node)
            self.available = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write)
                nursery.start_soon(self._read, reader)
                nursery.start_soon(self._store_snapshots, writer)
                nursery.start_soon(self._compact, writer)
                nursery.start_soon(self._health, writer)
                task_status.started()

    async def _snapshot(self, client: Any) -> tuple[dict[str, Any] | None, int, str]:
        """The stored snapshot: (state or None, its format, the log id it covers)."""
        snap = await client.hgetall(self.snapshot_key)
        if not snap:
            return None, STATE_VERSION, "0-0"
        snap = {_text(k): v for k, v in snap.items()}
        with gc_paused():
            state = decode(snap["state"])
        return state, int(_text(snap.get("version", STATE_VERSION))), _text(snap["id"])

    async def _load(self, client: Any, node: str) -> None:
        """The snapshot and the log after it, applied without live effects."""
        while True:
            try:
                state, version, self.last_id = await self._snapshot(client)
                break
            except Exception as exc:  # Redis not there yet: wait for it
                log.warning("cluster log: cannot load the state from Redis (%s), retrying", exc)
                await trio.sleep(1)
        actor = self.actor
        with gc_paused():
            actor.execute_now(Restore(state, [], version, node))
        actor.execute_now(ApplyLog([], live=False, since=self.last_id))
        n = 0
        while True:
            entries = await client.xrange(self.stream, f"({self.last_id}", "+", count=BATCH * 4)
            if not entries:
                break
            batch = self._entries(entries)
            actor.execute_now(ApplyLog(batch, live=False))
            n += len(batch)
        log.info("state loaded from Redis: %d log records after the snapshot", n)

    def _entries(self, entries: Any) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for entry in entries:
            fields = entry.field_values
            data = fields.get(b"r", fields.get("r"))
            out.append((_text(entry.identifier), decode(data)))
        if out:
            self.last_id = out[-1][0]
        return out

    async def _write(self) -> None:
        receive = self._out_receive
        actor = self.actor
        resp = RespClient(self.url)
        stream = self.stream.encode()
        while True:
            batch = await receive_batch(receive, BATCH)
            commands: list[list[Any]] = [[b"MULTI"]]
            commands += [[b"XADD", stream, b"*", b"r", encode(rec)] for rec in batch]
            commands.append([b"EXEC"])
            try:
                stored = (await resp.call(commands, WRITE_TIMEOUT))[-1]
                if type(stored) is not list or any(isinstance(x, RespError) for x in stored):
                    raise RespError(f"the batch was not stored: {stored!r}")
            except Exception as exc:  # unreachable, refused or too slow: its origins hear `unavailable`
                # (a batch that timed out may be stored after all: a client's retry
                # with the same `client_msg_id` is then answered as a duplicate)
                self._unreachable(exc)
                tokens = [rec["o"][1] for rec in batch]
                while True:  # what was queued behind them fails too: keep the order
                    try:
                        tokens.append(receive.receive_nowait()["o"][1])
                    except trio.WouldBlock:
                        break
                log.warning("cluster log: Redis did not store %d record(s)", len(tokens))
                await actor.tell(LogRefused(tokens))

    def _unreachable(self, exc: BaseException) -> None:
        """Redis failed a command: refuse new records (`unavailable`) until it
        answers again (`_health`)."""
        if self.available:
            self.background.failed("cluster.log", exc)
        self.available = False
        self._lost.set()

    async def _health(self, client: Any) -> None:
        """Once Redis failed, PING it until it answers, then take records again."""
        while True:
            await self._lost.wait()
            while True:
                await trio.sleep(RETRY)
                try:
                    await client.ping()
                    break
                except Exception:
                    continue
            self._lost = trio.Event()
            self.available = True
            self.background.recovered("cluster.log")

    async def _reload(self, client: Any) -> None:
        """The log was trimmed past what this node applied (it could not read,
        or was too slow, for a snapshot interval): take the state from the
        snapshot again and read on from there, so no record is ever skipped.
        Its own records still in flight are answered `unavailable` (they may be
        stored: a client's retry with the same `client_msg_id` is answered as a
        duplicate)."""
        state, version, since = await self._snapshot(client)
        log.warning("cluster log: the log was trimmed past %s; state reloaded from the snapshot at %s",
                    self.last_id, since)  # fmt: skip
        await self.actor.call(Restore(state, [], version))
        await self.actor.call(ApplyLog([], since=since))
        self.last_id = since

    async def _read(self, client: Any) -> None:
        """Read the log in order: one round trip per wake-up, XREAD BLOCK of the
        records after this node's position (up to BATCH) with, pipelined behind
        it, how far the log was trimmed. `trimmed` is read after the records and
        only grows, and a trim and its `trimmed` are one script: if it is not
        past the position the records were read from, no record after that
        position was trimmed when they were read, so none was skipped."""
        actor = self.actor
        resp = RespClient(self.url)
        stream, snapshot_key = self.stream.encode(), self.snapshot_key.encode()
        failed = False
        while True:
            since = self.last_id
            read: list[Arg] = [b"XREAD", b"COUNT", BATCH, b"BLOCK", BLOCK_MS, b"STREAMS", stream, since]
            try:
                found, trimmed = await resp.call([read, [b"HGET", snapshot_key, b"trimmed"]], READ_TIMEOUT)
                failed = False
                if trimmed and not _later_or_same(since, _text(trimmed)):
                    await self._reload(client)
                    continue
                if not found:
                    continue  # BLOCK_MS without a record
            except Exception as exc:
                if not failed:
                    log.warning("cluster log: reading the log failed (%s), resuming after %s", exc, self.last_id)
                    self._unreachable(exc)
                failed = True
                await trio.sleep(RETRY)
                continue
            batch = [(_text(entry_id), decode(_field(fields))) for entry_id, fields in found[0][1]]
            self.last_id = batch[-1][0]
            await actor.tell(ApplyLog(batch))

    # -- compaction ----------------------------------------------------------------------

    async def _compact(self, client: Any) -> None:
        """Every `storage.snapshot_interval`, the node that takes the lock snapshots."""
        actor = self.actor
        while True:
            interval = self.config().storage.snapshot_interval
            await trio.sleep(interval)
            try:
                mine = await client.set(self.lock_key, self.origin, condition=self._nx, px=max(1, int(interval * 900)))
            except Exception as exc:
                log.warning("cluster log: snapshot lock: %s", exc)
                continue
            if mine:
                await actor.call(TakeSnapshot(if_changed=True))

    async def _store_snapshots(self, client: Any) -> None:
        while True:
            state, last_id = await self._snap_receive.receive()
            if not last_id:
                continue  # nothing applied from the log yet
            try:
                text = await trio.to_thread.run_sync(_json_text, state)
                keys = [self.snapshot_key, self.stream]
                stored = await client.eval(_STORE_SNAPSHOT, keys, [last_id, STATE_VERSION, text.encode()])
                if stored:
                    log.info("cluster log: snapshot at %s stored", last_id)
            except Exception as exc:
                log.warning("cluster log: snapshot not stored: %s", exc)


# Store a snapshot unless the stored one is as new, and trim the log below the
# one it replaces (not below itself: a node that was a little behind still
# finds every record after its position). Atomic, so two nodes cannot
# interleave. KEYS: the snapshot hash, the log; ARGV: log id, version, state.
_STORE_SNAPSHOT = """
local cur = redis.call('HGET', KEYS[1], 'id')
if cur then
  local cms, cseq = string.match(cur, '(%d+)-(%d+)')
  local nms, nseq = string.match(ARGV[1], '(%d+)-(%d+)')
  cms, cseq, nms, nseq = tonumber(cms), tonumber(cseq), tonumber(nms), tonumber(nseq)
  if cms > nms or (cms == nms and cseq >= nseq) then return 0 end
  redis.call('XTRIM', KEYS[2], 'MINID', cur)
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'version', ARGV[2], 'state', ARGV[3], 'trimmed', cur or '0-0')
return 1
"""


def _field(fields: list[Any]) -> bytes:
    """The record's JSON among an entry's field/value list as XREAD returns it."""
    for name, value in zip(fields[::2], fields[1::2], strict=True):
        if _text(name) == "r":
            return value if isinstance(value, bytes) else str(value).encode()
    raise ValueError("a log entry without its record")


def _json_text(state: dict[str, Any]) -> str:
    return "".join(json_chunks(state))


def _later_or_same(a: str, b: str) -> bool:
    """Whether stream id `a` is at or after `b`."""
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) >= (int(bms), int(bseq or 0))
