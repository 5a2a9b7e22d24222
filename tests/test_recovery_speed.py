"""Start-up speed work (issue 8, recovery): the fast paths must not change what loads.

- A data directory written by the previous version (before these changes) still
  loads, to the same state that version restored from it (fixture below, made
  with that version's hub and `FileStorage`).
- The one-pass journal scan gives exactly what the line-by-line reading gives for
  a clean journal, and for anything unusual defers to it (same records, same
  warnings, same `StorageError` naming file and line).
- The cyclic GC is paused during the load and restored as it was.
- The de-duplication table prunes from its front in O(1) (it was a plain dict
  whose first entry is found by skipping every slot deleted before it).
"""

from __future__ import annotations

import gc
import json
import logging
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsserver.config import load_config
from wsserver.core.hub import Hub
from wsserver.core.message_store import MemoryMessageStore, RetentionPolicy
from wsserver.core.stored_messages import party
from wsserver.storage import FileStorage, StorageError
from wsserver.storage import reader as reader_mod
from wsserver.storage.base import encode_record, json_chunks
from wsserver.storage.gcpause import gc_paused

# -- a data directory written by the previous version (made with its hub) ------------

OLD_SNAPSHOT = (
    '{"version":1,"n":8,"written_at":1700000000.0,"state":{"n":8,"messages":{"next_id":6,'
    '"messages":[{"id":1,"seq":1,"from_key":"1||1","to_key":"1||2","from":{"user_id":1,"u'
    'ser_type":null,"username":null},"to":{"user_id":2,"user_type":null,"group_id":"1"},"'
    'text":"m1 ✓ from 1","session_id":null,"message_type":"text","reply_to":null,"cmid":"'
    'c1","time":1700000001000,"boxed":false,"n":1,"status":"read","read_at":1700000005000'
    '},{"id":2,"seq":1,"from_key":"1||2","to_key":"1||1","from":{"user_id":2,"user_type":'
    'null,"username":null},"to":{"user_id":1,"user_type":null,"group_id":"1"},"text":"m2 '
    '✓ from 2","session_id":"s1","message_type":"text","reply_to":null,"cmid":"c2","time"'
    ':1700000002000,"boxed":false,"n":2,"status":"sent"},{"id":3,"seq":1,"from_key":"1||1'
    '","to_key":"1||4","from":{"user_id":1,"user_type":null,"username":null},"to":{"user_'
    'id":4,"user_type":null,"group_id":"1"},"text":"m3 ✓ from 1","session_id":null,"messa'
    'ge_type":"text","reply_to":null,"cmid":"c3","time":1700000003000,"boxed":true,"n":3,'
    '"status":"sent"},{"id":4,"seq":2,"from_key":"1||3","to_key":"1||4","from":{"user_id"'
    ':3,"user_type":null,"username":null},"to":{"user_id":4,"user_type":null,"group_id":"'
    '1"},"text":"m4 ✓ from 3","session_id":7,"message_type":"text","reply_to":null,"cmid"'
    ':"c4","time":1700000004000,"boxed":true,"n":4,"status":"sent"},{"id":5,"seq":2,"from'
    '_key":"1||1","to_key":"1||2","from":{"user_id":1,"user_type":null,"username":null},"'
    'to":{"user_id":2,"user_type":null,"group_id":"1"},"text":"m5 ✓ from 1","session_id":'
    '"s1","message_type":"text","reply_to":null,"cmid":"c5","time":1700000005000,"boxed":'
    'false,"n":5,"status":"sent"}],"seq":{"1||2":2,"1||1":1,"1||4":2},"mailbox":{"1||4":['
    '3,4]},"truncated":{},"conversations":{"1||1>1||2":[1,2,5],"1||1>1||4":[3],"1||3>1||4'
    '":[4]},"inbox":{"1||2":[1,5],"1||1":[2],"1||4":[3,4]},"dedup":{"1||1|c1":[1,17000000'
    '01000,1],"1||2|c2":[2,1700000002000,1],"1||1|c3":[3,1700000003000,1],"1||3|c4":[4,17'
    '00000004000,2],"1||1|c5":[5,1700000005000,2]}},"crm":{"groups":{"1":{"accounts":{},"'
    'seen":{"L1":{"acct":"a1","time":1}},"days":{"2023-11-14":{"":[1,0],"a1":[1,0]}},"tot'
    'als":{"":[1,0],"a1":[1,0]},"customers":{},"follow_ups":[]}},"next_customer_db_id":1,'
    '"next_follow_up_id":1},"activation_codes":{"overrides":{"CODE1":{"group_id":5,"name"'
    ':"front desk","enabled":true}}}}}'
)

OLD_JOURNAL = (
    '{"n":9,"t":"msg","id":6,"seq":2,"from_key":"1||2","to_key":"1||1","from":{"user_id":'
    '2,"user_type":null,"username":null},"to":{"user_id":1,"user_type":null,"group_id":"1'
    '"},"text":"m6 ✓ from 2","session_id":"s1","message_type":"text","reply_to":null,"cmi'
    'd":"c6","time":1700000706000,"boxed":false}\n'
    '{"n":10,"t":"msg","id":7,"seq":3,"from_key":"1||1","to_key":"1||4","from":{"user_id"'
    ':1,"user_type":null,"username":null},"to":{"user_id":4,"user_type":null,"group_id":"'
    '1"},"text":"m7 ✓ from 1","session_id":null,"message_type":"text","reply_to":null,"cm'
    'id":"c7","time":1700000707000,"boxed":true}\n'
    '{"n":11,"t":"msg","id":8,"seq":1,"from_key":"1||2","to_key":"1||3","from":{"user_id"'
    ':2,"user_type":null,"username":null},"to":{"user_id":3,"user_type":null,"group_id":"'
    '1"},"text":"m8 ✓ from 2","session_id":null,"message_type":"text","reply_to":null,"cm'
    'id":"c8","time":1700000708000,"boxed":false}\n'
    '{"n":12,"t":"status","id":2,"status":"delivered","time":1700000708000}\n'
    '{"n":13,"t":"code_del","code":"CODE1"}\n'
    '{"n":14,"t":"crm_incoming","g":"1","acct":"a1","line":"L1","day":"2023-11-14","time"'
    ":2}\n"
)

# What that directory restores to; the message store migrated to format 2
# (`core.migrate`): plain ids keep their keys, conversations are joined with `|`.
OLD_RESTORED: dict[str, Any] = {
    "last_n": 14,
    "next_n": 15,
    "journal_records": 6,
    "messages": {
        "next_id": 9,
        "messages": [
            {
                "id": 1,
                "seq": 1,
                "from_key": "1||1",
                "to_key": "1||2",
                "from": {"user_id": 1, "user_type": None, "username": None},
                "to": {"user_id": 2, "user_type": None, "group_id": "1"},
                "text": "m1 ✓ from 1",
                "session_id": None,
                "message_type": "text",
                "reply_to": None,
                "cmid": "c1",
                "time": 1700000001000,
                "boxed": False,
                "n": 1,
                "status": "read",
                "read_at": 1700000005000,
            },
            {
                "id": 2,
                "seq": 1,
                "from_key": "1||2",
                "to_key": "1||1",
                "from": {"user_id": 2, "user_type": None, "username": None},
                "to": {"user_id": 1, "user_type": None, "group_id": "1"},
                "text": "m2 ✓ from 2",
                "session_id": "s1",
                "message_type": "text",
                "reply_to": None,
                "cmid": "c2",
                "time": 1700000002000,
                "boxed": False,
                "n": 2,
                "status": "delivered",
                "delivered_at": 1700000708000,
            },
            {
                "id": 3,
                "seq": 1,
                "from_key": "1||1",
                "to_key": "1||4",
                "from": {"user_id": 1, "user_type": None, "username": None},
                "to": {"user_id": 4, "user_type": None, "group_id": "1"},
                "text": "m3 ✓ from 1",
                "session_id": None,
                "message_type": "text",
                "reply_to": None,
                "cmid": "c3",
                "time": 1700000003000,
                "boxed": True,
                "n": 3,
                "status": "sent",
            },
            {
                "id": 4,
                "seq": 2,
                "from_key": "1||3",
                "to_key": "1||4",
                "from": {"user_id": 3, "user_type": None, "username": None},
                "to": {"user_id": 4, "user_type": None, "group_id": "1"},
                "text": "m4 ✓ from 3",
                "session_id": 7,
                "message_type": "text",
                "reply_to": None,
                "cmid": "c4",
                "time": 1700000004000,
                "boxed": True,
                "n": 4,
                "status": "sent",
            },
            {
                "id": 5,
                "seq": 2,
                "from_key": "1||1",
                "to_key": "1||2",
                "from": {"user_id": 1, "user_type": None, "username": None},
                "to": {"user_id": 2, "user_type": None, "group_id": "1"},
                "text": "m5 ✓ from 1",
                "session_id": "s1",
                "message_type": "text",
                "reply_to": None,
                "cmid": "c5",
                "time": 1700000005000,
                "boxed": False,
                "n": 5,
                "status": "sent",
            },
            {
                "n": 9,
                "id": 6,
                "seq": 2,
                "from_key": "1||2",
                "to_key": "1||1",
                "from": {"user_id": 2, "user_type": None, "username": None},
                "to": {"user_id": 1, "user_type": None, "group_id": "1"},
                "text": "m6 ✓ from 2",
                "session_id": "s1",
                "message_type": "text",
                "reply_to": None,
                "cmid": "c6",
                "time": 1700000706000,
                "boxed": False,
                "status": "sent",
            },
            {
                "n": 10,
                "id": 7,
                "seq": 3,
                "from_key": "1||1",
                "to_key": "1||4",
                "from": {"user_id": 1, "user_type": None, "username": None},
                "to": {"user_id": 4, "user_type": None, "group_id": "1"},
                "text": "m7 ✓ from 1",
                "session_id": None,
                "message_type": "text",
                "reply_to": None,
                "cmid": "c7",
                "time": 1700000707000,
                "boxed": True,
                "status": "sent",
            },
            {
                "n": 11,
                "id": 8,
                "seq": 1,
                "from_key": "1||2",
                "to_key": "1||3",
                "from": {"user_id": 2, "user_type": None, "username": None},
                "to": {"user_id": 3, "user_type": None, "group_id": "1"},
                "text": "m8 ✓ from 2",
                "session_id": None,
                "message_type": "text",
                "reply_to": None,
                "cmid": "c8",
                "time": 1700000708000,
                "boxed": False,
                "status": "sent",
            },
        ],
        "seq": {"1||2": 2, "1||1": 2, "1||4": 3, "1||3": 1},
        "mailbox": {"1||4": [3, 4, 7]},
        "truncated": {},
        "conversations": {
            "1||1|1||2": [1, 2, 5, 6],
            "1||1|1||4": [3, 7],
            "1||3|1||4": [4],
            "1||2|1||3": [8],
        },
        "inbox": {"1||2": [1, 5], "1||1": [2, 6], "1||4": [3, 4, 7], "1||3": [8]},
        "dedup": {
            "1||2|c6": [6, 1700000706000, 2],
            "1||1|c7": [7, 1700000707000, 3],
            "1||2|c8": [8, 1700000708000, 1],
        },
    },
    "crm": {
        "groups": {
            "1": {
                "accounts": {},
                "seen": {"L1": {"acct": "a1", "time": 1}},
                "days": {"2023-11-14": {"": [2, 1], "a1": [2, 1]}},
                "totals": {"": [2, 1], "a1": [2, 1]},
                "customers": {},
                "follow_ups": [],
            }
        },
        "next_customer_db_id": 1,
        "next_follow_up_id": 1,
    },
    "activation_codes": {"overrides": {"CODE1": None}},
    "by_session": {"s1": [2, 5, 6], "7": [4]},
}


def _config(tmp_path: Path) -> Any:
    return load_config(
        None, env={}, overrides={"storage.dir": str(tmp_path), "storage.fsync": "never"}
    )


def _restored(tmp_path: Path) -> tuple[Hub, int, int]:
    storage = FileStorage(tmp_path, "never")
    loaded = storage.load()
    hub = Hub(_config(tmp_path), storage=storage)
    hub.restore(loaded.state, loaded.records, loaded.version)
    return hub, loaded.next_n, len(loaded.records)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


# -- the previous version's data directory -------------------------------------------


def _write_old_dir(path: Path, journal_tail: bytes = b"") -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "snapshot.json").write_bytes(OLD_SNAPSHOT.encode())
    (path / "journal.jsonl").write_bytes(OLD_JOURNAL.encode() + journal_tail)


def test_a_data_dir_of_the_previous_version_restores_to_the_state_it_restored_to(
    tmp_path: Path,
) -> None:
    _write_old_dir(tmp_path)
    hub, next_n, journal_records = _restored(tmp_path)
    want = OLD_RESTORED
    assert (hub.last_n, next_n, journal_records) == (
        want["last_n"],
        want["next_n"],
        want["journal_records"],
    )
    store = hub.direct.store
    assert _json(store.to_state()) == want["messages"]
    crm = _json(hub.crm.to_state())  # with the parts added since, empty: incoming records, CRM replies
    assert crm.pop("requests") == [] and crm.pop("next_incoming_id") == 1
    assert all(group.pop("incoming") == [] for group in crm["groups"].values())
    assert crm == want["crm"]
    assert _json(hub.activation_codes.to_state()) == want["activation_codes"]
    assert store.by_session == want["by_session"]
    # the old journal is clean: it is read by the one-pass scan, not line by line
    data = (tmp_path / "journal.jsonl").read_bytes()
    assert reader_mod._scan_clean_journal(data, after=8) is not None
    # ...and the restored store goes on like the one that wrote it
    assert isinstance(store.dedup, OrderedDict)
    assert list(store.dedup) == list(want["messages"]["dedup"])


def test_a_torn_tail_on_the_previous_versions_journal_is_still_dropped_and_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_old_dir(tmp_path, journal_tail=b'{"n":15,"t":"msg","id":9,"se')
    with caplog.at_level(logging.WARNING, logger="wsserver.storage"):
        hub, next_n, _ = _restored(tmp_path)
    assert "journal.jsonl line 7: dropping a torn last line" in caplog.text
    assert (hub.last_n, next_n) == (14, 15)
    assert _json(hub.direct.store.to_state()) == OLD_RESTORED["messages"]
    assert (tmp_path / "journal.jsonl").read_bytes() == OLD_JOURNAL.encode()


# -- the one-pass journal scan against the line-by-line reading ---------------------


def _read_both(
    tmp_path: Path, data: bytes, after: int, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[Any, list[str]]]:
    """`read_journal` of `data` with the one-pass scan and without it: for each,
    the result (or the StorageError's message, line and path) and the warnings."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(data)
    out = []
    for fast in (True, False):
        with monkeypatch.context() as mp:
            if not fast:
                mp.setattr(reader_mod, "_scan_clean_journal", lambda data, after: None)
            handler = _Collect()
            logger = logging.getLogger("wsserver.storage")
            logger.addHandler(handler)
            try:
                result: Any = reader_mod.read_journal(path, after=after)
            except StorageError as exc:
                result = ("StorageError", str(exc), exc.line, exc.path)
            finally:
                logger.removeHandler(handler)
        out.append((result, handler.messages))
    return out


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
RECORDS = st.lists(
    st.dictionaries(st.text(max_size=6).filter(lambda k: k != "n"), JSON_VALUES, max_size=4),
    max_size=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=RECORDS, first=st.integers(1, 5), after=st.integers(0, 20))
def test_a_clean_journal_scans_in_one_pass_to_what_line_by_line_reading_gives(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    records: list[dict[str, Any]],
    first: int,
    after: int,
) -> None:
    data = b"".join(encode_record(first + i, r) for i, r in enumerate(records))
    (fast, fast_log), (slow, slow_log) = _read_both(tmp_path, data, after, monkeypatch)
    assert fast == slow
    assert fast_log == slow_log
    if first <= after + 1 or not records:  # no gap after the snapshot: nothing to warn of
        assert reader_mod._scan_clean_journal(data, after) is not None


GOOD = b'{"n":1,"i":1}\n{"n":2,"i":2}\n'


@pytest.mark.parametrize(
    "data",
    [
        GOOD + b'{"n":3,"i',  # torn: no newline
        GOOD + b'{"n":3,"i\n',  # torn: bad JSON
        GOOD + b'{"n":3,"i":"\xe2\x9c"}\n',  # torn: bad UTF-8
        b'{"n":1,"i\n' + GOOD[14:],  # bad JSON before the end
        b"[1]\n" + GOOD,  # not an object
        b'{"i":1}\n' + GOOD,  # no number
        b'{"n":true}\n' + GOOD,  # a bool is no number
        b'{"n":0}\n' + GOOD,
        b'{"n":1.0}\n' + GOOD[14:],
        GOOD + b'{"n":2}\n',  # number repeats
        GOOD + b'{"n":5}\n',  # records missing: a warning
        b"\xef\xbb\xbf" + GOOD,  # a BOM
        b' {"n":1}\n',  # whitespace json.loads accepts
        b'{"n":1} \n{"n":2}\t\r\n',
        GOOD + b"\n",  # an empty line at the end
        b"\n" + GOOD,  # ...and before the end
        b'{"n":1}{"n":2}\n',  # two objects on one line
        b'{"n":1},{"n":2}\n',
        b'{"n":1,"a":[1\n2]}\n',  # a value across lines
        b'{"n":1,"x":NaN}\n',  # what json.loads accepts beyond JSON
        b"",
        b"\n",
    ],
)
@pytest.mark.parametrize("after", [0, 1, 3])
def test_anything_unusual_in_the_journal_reads_as_line_by_line_reading_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, after: int
) -> None:
    (fast, fast_log), (slow, slow_log) = _read_both(tmp_path, data, after, monkeypatch)
    assert fast == slow
    assert fast_log == slow_log


def test_a_bad_line_still_stops_load_naming_file_and_line_and_leaves_the_file(
    tmp_path: Path,
) -> None:
    lines = [encode_record(n, {"t": "x", "i": n}) for n in range(1, 2001)]
    lines[1234] = lines[1234][:-5] + b"\n"  # cut inside the record
    content = b"".join(lines)
    (tmp_path / "journal.jsonl").write_bytes(content)
    with pytest.raises(StorageError) as info:
        FileStorage(tmp_path).load()
    assert str(info.value).startswith(f"{tmp_path / 'journal.jsonl'} line 1235: invalid JSON")
    assert (info.value.path, info.value.line) == (str(tmp_path / "journal.jsonl"), 1235)
    assert (tmp_path / "journal.jsonl").read_bytes() == content


# -- the cyclic GC ------------------------------------------------------------------

PAUSES: list[Callable[[], AbstractContextManager[None]]] = [gc_paused]


@pytest.fixture
def gc_state() -> Iterator[None]:
    was = gc.isenabled()
    try:
        yield
    finally:
        gc.unfreeze()
        if was:
            gc.enable()
        else:
            gc.disable()


def _in_the_oldest_generation(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects(generation=2))


@pytest.mark.usefixtures("gc_state")
@pytest.mark.parametrize("paused", PAUSES)
@pytest.mark.parametrize("enabled", [True, False])
def test_gc_is_paused_during_the_load_and_left_as_it_was(
    paused: Callable[[], AbstractContextManager[None]], enabled: bool
) -> None:
    gc.enable() if enabled else gc.disable()
    frozen = gc.get_freeze_count()  # not 0 everywhere: CPython 3.12.1 starts with some
    with paused():
        assert not gc.isenabled()
        made = [{"x": [i]} for i in range(5000)]
    assert gc.isenabled() is enabled
    assert gc.get_freeze_count() == frozen
    assert _in_the_oldest_generation(made[0])  # young collections no longer walk it
    assert gc.is_tracked(made[0])
    with pytest.raises(ZeroDivisionError):  # also when the load fails
        with paused():
            1 / 0  # noqa: B018
    assert gc.isenabled() is enabled


@pytest.mark.usefixtures("gc_state")
@pytest.mark.parametrize("paused", PAUSES)
def test_objects_a_host_froze_stay_frozen(
    paused: Callable[[], AbstractContextManager[None]],
) -> None:
    gc.enable()
    gc.freeze()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    with paused():
        made = [{"x": [i]} for i in range(5000)]
    assert gc.get_freeze_count() == frozen
    assert _in_the_oldest_generation(made[0])  # and what was loaded is out of the young ones



def test_restore_and_load_leave_a_disabled_gc_disabled(tmp_path: Path, gc_state: None) -> None:
    _write_old_dir(tmp_path)
    gc.disable()
    _restored(tmp_path)
    assert not gc.isenabled()


# -- the message store ----------------------------------------------------------------


def _msg(mid: int, time: int, cmid: str | None, session: Any = None) -> dict[str, Any]:
    return {
        "t": "msg",
        "n": mid,
        "id": mid,
        "seq": mid,
        "from_key": "1||1",
        "to_key": "1||2",
        "from": {"user_id": 1},
        "to": {"user_id": 2},
        "text": "x",
        "session_id": session,
        "cmid": cmid,
        "time": time,
        "boxed": False,
    }


def test_dedup_keeps_the_window_in_time_order_and_a_retry_moves_to_the_end() -> None:
    store = MemoryMessageStore(RetentionPolicy(dedup_window_ms=1000, history_limit=0))
    for i in range(1, 5001):
        store.apply(_msg(i, i * 10, f"c{i}"))
    # within 1000 ms of the last (time 50000): times 49000..50000, ids 4900..5000
    assert list(store.dedup) == [f"1||1|c{i}" for i in range(4900, 5001)]
    store.apply(_msg(5001, 50_005, "c4950"))  # the same client id again
    assert list(store.dedup)[-1] == "1||1|c4950"
    assert store.dedup["1||1|c4950"] == (5001, 50_005, 5001)
    assert next(iter(store.dedup)) == "1||1|c4901"  # c4900 (49000) fell out of the window
    assert len(store.dedup) == 100
    again = MemoryMessageStore.from_state(_json(store.to_state()), store.policy)
    assert isinstance(again.dedup, OrderedDict)
    assert list(again.dedup.items()) == list(store.dedup.items())


def test_restored_sessions_list_ids_ascending_whatever_the_snapshot_order() -> None:
    store = MemoryMessageStore(RetentionPolicy(history_limit=0))
    for i, sid in enumerate(["a", 7, None, "a", "7", "b"], start=1):
        store.apply(_msg(i, i, None, sid))
    assert store.by_session == {"a": [1, 4], "7": [2, 5], "b": [6]}
    state = _json(store.to_state())
    state["messages"].reverse()
    again = MemoryMessageStore.from_state(state, store.policy)
    assert again.by_session == store.by_session
    assert list(again.messages) == [6, 5, 4, 3, 2, 1]  # the snapshot's order, as before


def _message_record(sender: Any = "a") -> dict[str, Any]:
    return {
        "t": "msg", "id": 1, "seq": 1, "from_key": f"1||{sender}", "to_key": "1||b",
        "from": {"user_id": sender, "user_type": None, "username": "Ä"},
        "to": {"user_id": "b", "user_type": None, "group_id": "1"},
        "text": "hi", "session_id": None, "message_type": "text", "reply_to": None,
        "cmid": None, "time": 1, "boxed": False,
    }  # fmt: skip


def test_stored_messages_leave_the_cyclic_gc_and_snapshot_as_objects() -> None:
    """A stored message holds only plain values (its parties as JSON text), so
    the GC never tracks it; snapshots still write its parties as objects."""
    store = MemoryMessageStore(policy=RetentionPolicy())
    rec = _message_record()
    store.apply(rec)
    # not tracked from the start: CPython untracks dicts only in full collections,
    # so a tracked message would be walked by every young collection until then
    assert not gc.is_tracked(store.messages[1])
    state = store.to_state()
    assert state["messages"][0]["from"] == rec["from"] and state["messages"][0]["to"] == rec["to"]
    again = MemoryMessageStore.from_state(json.loads(json.dumps(state)), RetentionPolicy())
    assert again.to_state() == state
    assert party(again.messages[1], "to") == rec["to"]


def test_stored_parties_keep_integers_over_64_bits_exact() -> None:
    """orjson refuses integers over 64 bits (and would read them back as floats):
    such a party is kept as the stdlib encoder's text and comes back exact."""
    store = MemoryMessageStore(policy=RetentionPolicy())
    big = 2**70 + 1
    rec = _message_record(big)
    store.apply(rec)
    assert not gc.is_tracked(store.messages[1])
    assert party(store.messages[1], "from") == rec["from"]
    assert store.to_state()["messages"][0]["from"]["user_id"] == big


def test_a_stored_message_keeps_no_more_memory_than_its_content_needs() -> None:
    """orjson 3.13 hands out its output in a ~4 KiB allocation whatever its
    length: keeping those bytes cost 8 KB per stored message (two parties)."""
    store = MemoryMessageStore(policy=RetentionPolicy())
    records = []
    for i in range(1, 1001):
        rec = _message_record(f"user-{i}")
        rec["id"] = rec["seq"] = i
        records.append(rec)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for rec in records:
            store.apply(rec)
        per_message = (tracemalloc.get_traced_memory()[0] - before) / len(records)
    finally:
        tracemalloc.stop()
    assert per_message < 1500, per_message  # ~750 bytes here: the dict, its keys and values


def _view_json(view: dict[str, Any]) -> Any:
    return json.loads("".join(json_chunks(view, 2)))


def test_a_snapshot_view_encodes_as_the_detached_snapshot_does() -> None:
    """Messages stored at run time (parties as text, one beyond 64 bits), restored
    from a snapshot (parties as objects), and with a changed status."""
    old = MemoryMessageStore(policy=RetentionPolicy())
    first = _message_record("restored")
    old.apply(first)
    store = MemoryMessageStore.from_state(_json(old.to_state()), RetentionPolicy())
    for i, sender in enumerate(["a", 2**70 + 1, "c"], start=2):
        rec = _message_record(sender)
        rec["id"] = rec["seq"] = i
        store.apply(rec)
    store.apply({"t": "status", "id": 3, "status": "delivered", "time": 5})
    assert _view_json(store.snapshot_view()) == _json(store.to_state())
    assert _view_json(store.snapshot_view())["messages"][2]["from"]["user_id"] == 2**70 + 1


def test_a_status_change_after_the_view_is_taken_does_not_reach_it() -> None:
    """The snapshot must show the state at its record number: a later status
    change stores a new dict and leaves the one the view holds alone."""
    store = MemoryMessageStore(policy=RetentionPolicy())
    rec = _message_record()
    store.apply(rec)
    store.apply({"t": "box", "id": 1})
    view = store.snapshot_view()
    before = _view_json(view)
    store.apply({"t": "status", "id": 1, "status": "read", "time": 9})
    assert store.messages[1]["status"] == "read" and store.messages[1]["read_at"] == 9
    assert _view_json(view) == before
    assert before["messages"][0]["status"] == "sent" and "read_at" not in before["messages"][0]
    assert before["mailbox"] == {"1||b": [1]}  # consistent with the status it shows


def test_the_hub_hands_the_writer_a_view_that_reads_back_as_its_snapshot() -> None:
    hub = Hub(load_config(None, env={}, overrides={}))
    for i in range(1, 4):
        rec = _message_record(f"u{i}")
        rec["id"] = rec["seq"] = i
        hub.direct.store.apply(rec)
    assert _view_json(hub.snapshot_view()) == _json(hub.snapshot_state())
