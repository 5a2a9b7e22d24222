"""The hub in cluster mode, without I/O (`core.cluster_broker`,
`core.cluster_presence`): which deliveries are handed to the other nodes and
which stay local, another node's hand-over delivered here and never handed
on, a full outlet never blocking, presence changes told in order, and the
routes a hub runs for the others (kick, close)."""

from __future__ import annotations

import json
from typing import Any

from tests.test_hub import NOW, FakeOutlet, connect, join, send, user
from wsserver.config import load_config
from wsserver.core.admin_commands import Kick
from wsserver.core.cluster_broker import ClusterOutlets
from wsserver.core.cluster_commands import CloseConnection, Deliver
from wsserver.core.commands import Publish, Target
from wsserver.core.hub import Hub
from wsserver.errors import CloseCode


class Outlets:
    """What the hub hands to the network layer, recorded (`full` refuses)."""

    def __init__(self) -> None:
        self.bus: list[tuple[tuple[Any, ...], str]] = []
        self.presence: list[tuple[str, dict[str, Any] | None]] = []
        self.full = False

    def take_bus(self, route: tuple[Any, ...], frame: Any) -> bool:
        if self.full:
            return False
        self.bus.append((route, frame))
        return True

    def take_presence(self, conn_id: str, entry: dict[str, Any] | None) -> bool:
        self.presence.append((conn_id, entry))
        return True


def cluster_hub(**overrides: Any) -> tuple[Hub, Outlets]:
    outlets = Outlets()
    config = load_config(None, env={}, overrides=overrides)
    hub = Hub(config, clock=lambda: NOW, cluster=ClusterOutlets(outlets.take_bus, outlets.take_presence))
    hub.env.node = "node-a"
    return hub, outlets


def test_a_publish_is_delivered_here_and_handed_over_once_with_its_frame() -> None:
    hub, out = cluster_hub()
    _, outlet = connect(hub, user(1))
    result = hub.execute(Publish("note", {"n": 1}, Target(user_ids=(1, 2), group_id=1)))
    assert result.delivered == 1
    assert len(out.bus) == 1
    route, frame = out.bus[0]
    assert route == ("t", [1, 2], 1, None, False, None, None, None)
    assert json.loads(frame) == outlet.last  # the same encoded frame


def test_room_messages_and_typing_are_handed_over_direct_messages_are_not() -> None:
    hub, out = cluster_hub()
    one, o1 = connect(hub, user(1))
    join(hub, one, "r", o1)
    out.bus.clear()
    send(hub, one, "room_message", {"room": "r", "text": "hi"})
    send(hub, one, "typing", {"to_user_id": 2})
    send(hub, one, "send_message", {"to_user_id": 2, "content": "dm"})
    kinds = [route[0] for route, _ in out.bus]
    assert kinds == ["r", "p"]


def test_another_node_s_delivery_reaches_local_connections_and_is_not_handed_on() -> None:
    hub, out = cluster_hub()
    two, outlet = connect(hub, user(2))
    join(hub, two, "r", outlet)
    out.bus.clear()
    frame = '{"type":"room_message","data":{"text":"from b"},"timestamp":1}'
    assert hub.execute(Deliver(("r", "1", "r"), frame)) == 1
    assert hub.execute(Deliver(("t", [2], None, None, False, None), frame)) == 1
    assert hub.execute(Deliver(("zz", 1), frame)) == 0  # a newer node's route: ignored
    assert out.bus == []
    assert len(outlet.of_type("room_message")) == 2


def test_a_full_outlet_never_blocks_the_hub_and_is_counted() -> None:
    hub, out = cluster_hub()
    connect(hub, user(1))
    out.full = True
    assert hub.execute(Publish("note", {}, Target(everyone=True))).delivered == 1
    assert hub.cluster is not None and hub.cluster.bus_dropped == 1


def test_presence_changes_are_told_in_order_and_the_last_is_the_state() -> None:
    hub, out = cluster_hub()
    conn, outlet = connect(hub, user(1, username="ann"), device_id="phone")
    join(hub, conn, "r", outlet)
    send(hub, conn, "leave_room", {"room": "r"})
    hub.close(conn)
    assert [c for c, _ in out.presence] == [conn] * 4
    bound, joined, left, gone = (e for _, e in out.presence)
    assert bound is not None and bound["user_id"] == 1 and bound["device_id"] == "phone"
    assert bound["principal"] == ["user", "", "1"] and bound["rooms"] == []
    assert joined is not None and joined["rooms"] == [["1", "r"]]
    assert left is not None and left["rooms"] == []
    assert gone is None


class KickableOutlet(FakeOutlet):
    def close_after_queued(self, code: int, key: str, **params: Any) -> None:  # type: ignore[override]
        self.closed_after_queued.append((code, key))


def kickable(hub: Hub, user_id: int) -> tuple[str, KickableOutlet]:
    outlet = KickableOutlet()
    conn_id = f"k{user_id}"
    assert hub.admit(outlet, conn_id, "10.0.0.1") is None
    assert hub.authenticate(conn_id, user(user_id)) is None
    return conn_id, outlet


def test_kicks_are_handed_over_and_another_node_s_kick_and_close_run_here() -> None:
    hub, out = cluster_hub()
    _, one = kickable(hub, 1)
    _, two = kickable(hub, 2)
    c3, three = kickable(hub, 3)
    assert hub.execute(Kick(1, reason="bye")) == 1
    assert out.bus[-1] == (("k", 1, None, None, "bye", None, None), "")
    assert one.closed_after_queued == [(CloseCode.KICKED, "kicked_reason")]
    assert hub.execute(Deliver(("k", 2, None, None, "bye", None, None), "")) == 1
    assert two.closed_after_queued == [(CloseCode.KICKED, "kicked_reason")]
    assert hub.execute(Deliver(("c", "node-b", c3, CloseCode.REPLACED, "replaced"), "")) == 0  # not ours
    assert hub.execute(Deliver(("c", "node-a", c3, CloseCode.REPLACED, "replaced"), "")) == 1
    assert three.closed == [(CloseCode.REPLACED, "replaced")]
    assert hub.execute(CloseConnection(c3, CloseCode.REPLACED, "replaced")) is False  # already gone


def test_a_hub_without_a_cluster_has_the_local_broker_and_presence() -> None:
    hub = Hub(load_config(None, env={}), clock=lambda: NOW)
    assert hub.cluster is None and Deliver not in hub.commands
    assert type(hub.presence).__name__ == "LocalPresence"
