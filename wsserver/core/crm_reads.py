"""The CRM's records read back by the business backend (SPEC 13: `GET
/api/groups/{g}/customers`, `/follow-ups`, `/incoming`), without I/O.

Pages are by number, not by offset: `after` is the last number the reader
has (0 to start), so a page never skips or repeats a record when new ones
arrive between two reads (they only ever get higher numbers). A group
without CRM data reads as empty, never as an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsserver.core.commands import CrmPage
from wsserver.core.crm_store import PAGES
from wsserver.core.stores import CrmStore

__all__ = ["CrmReads"]


class CrmReads:
    """The `CrmPage` command, over the CRM's store."""

    def __init__(self, store: CrmStore, group_id: Callable[[str, Any], Any]) -> None:
        self.store = store
        self.group_id = group_id  # a group's id as replies echo it (`Hub.group_id`)
        self.commands: dict[type[Any], Callable[[Any], Any]] = {CrmPage: self.page}

    def page(self, cmd: CrmPage) -> dict[str, Any]:
        """`{group_id, items, has_more, next_after}`: `next_after` is the `after` of
        the next page (the last number given; `after` itself for an empty page)."""
        items, more = self.store.page(cmd.group, cmd.kind, cmd.after, cmd.limit)
        number = PAGES[cmd.kind][1]
        last = items[-1][number] if items else cmd.after
        return {"group_id": self.group_id(cmd.group, cmd.group), "items": items, "has_more": more, "next_after": last}
