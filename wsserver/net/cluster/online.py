"""A principal's first and last connection across the cluster, decided in Redis.

`user_online` / `user_offline` are once per cluster (SPEC 6.2 and 11): the
node that writes a connection's presence (`net.cluster.presence`) adds it to
or removes it from its principal's sorted set with one script (`ADD`,
`REMOVE`) that answers how many live connections the principal has then. A
script runs alone in Redis, so of two nodes adding a principal's connections
at once exactly one hears 1 (the first: it makes `user_online`), and of two
removing its last ones exactly one hears 0 (the last: `user_offline`).

A member `"<node> <conn id>"` counts when its node is live (its last report
in `<prefix>:nodes:seen` newer than `cluster.node_ttl`, or the writing node
itself) and its node's hash still holds the connection (a node restarted
with the same id wrote its hash anew: its old members are stale). A dead
node's connections thus stop counting before a survivor removes them; that
survivor sends their `user_offline` (`PresenceWriter.node_gone`).
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["ADD", "REMOVE", "count_args"]

_COUNT = """
local n = 0
local live = {}
local cutoff = tonumber(ARGV[3])
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local sp = string.find(m, ' ', 1, true)
  if sp then
    local node = string.sub(m, 1, sp - 1)
    local ok = live[node]
    if ok == nil then
      if node == ARGV[4] then
        ok = true
      else
        local seen = redis.call('ZSCORE', KEYS[2], node)
        ok = seen ~= false and seen ~= nil and tonumber(seen) > cutoff
      end
      live[node] = ok
    end
    if ok and redis.call('HEXISTS', ARGV[5] .. node, string.sub(m, sp + 1)) == 1 then
      n = n + 1
    end
  end
end
return n
"""

ADD = "redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])\n" + _COUNT
"""KEYS: the principal's set, `<prefix>:nodes:seen`; ARGV: `count_args`.
Adds the member (after its hash entry was written); answers the live count."""

REMOVE = "redis.call('ZREM', KEYS[1], ARGV[1])\n" + _COUNT
"""As `ADD`, removing the member (after its hash entry was deleted)."""


def count_args(member: str, score: float, node_ttl: float, node: str, prefix: str) -> list[Any]:
    """The scripts' ARGV: the member and its score, the cutoff of a live node's
    last report (Unix ms), the writing node, and the nodes' hashes' key prefix."""
    cutoff = int(time.time() * 1000 - node_ttl * 1000)
    return [member, score, cutoff, node, f"{prefix}:conns:"]
