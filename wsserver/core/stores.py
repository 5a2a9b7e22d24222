"""The durable stores' interfaces: what each component asks of its state.

The hub's durable state lives in five stores, each behind a small protocol
that the component using it depends on, with an in-process implementation
(journaled and snapshotted through the hub's commit log, `core.commit`):

    MessageStore   direct messages: records, seq, receipts, dedup, mailboxes,
                   history           -> core.message_store.MemoryMessageStore
    CrmStore       the CRM's accounts, counters, customers, follow-ups
                                     -> core.crm_store.MemoryCrmStore
    CodeStore      the activation codes' run-time overrides
                                     -> core.activation_codes.MemoryCodeStore
    TaskStore      the latest state of each user's tasks (SPEC 6.1)
                                     -> core.tasks.MemoryTaskStore
    WebhookStore   the webhook outbox, the undelivered checks, who was
                   announced online  -> core.webhook_store.MemoryWebhookStore

A store for a cluster implements the same protocol; the components' decisions
(who may do what, who hears what) do not change.

Every store changes only through `apply(record)`, and `to_state` /
`load_state` move its state in and out of a snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from wsserver.core.keys import Key

__all__ = ["CodeStore", "CrmStore", "MessageStore", "TaskStore", "WebhookStore"]


class MessageStore(Protocol):
    """What the direct messages need of their durable store. Reading methods see
    durable messages only (`core.message_store`'s invariants); `apply` is the only change."""

    next_id: int
    """The id the next message gets."""

    def next_seq(self, recipient: Key) -> int:
        """The `seq` the next message to `recipient` gets."""

    def stored(self, mid: int) -> dict[str, Any] | None:
        """A kept message by id, durable or not (the one just recorded)."""

    def message(self, mid: int) -> dict[str, Any] | None:
        """A kept message by id, if it is durable."""

    def find_duplicate(self, sender: Key, client_msg_id: str, now_ms: int) -> dict[str, Any] | None:
        """The earlier message of `sender` with this `client_msg_id` within the window."""

    def mailbox_messages(self, recipient: Key) -> list[dict[str, Any]]:
        """Undelivered durable messages of `recipient`, in `seq` order."""

    def since(self, recipient: Key, last_seq: int) -> list[dict[str, Any]]:
        """Kept durable messages received by `recipient` with `seq > last_seq`, in order."""

    def durable_seq(self, recipient: Key) -> int:
        """The highest `seq` of `recipient` whose message is durable (or forgotten)."""

    def history(self, a: Key, b: Key, before_id: int | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """A page of the a–b conversation before `before_id`, oldest first; and whether there is more."""

    def session_history(
        self, party: Key, session_id: str, before_id: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Like `history`, for the messages of one `session_id` that `party` sent or got."""

    def mailbox_full(self, recipient: Key, size: int) -> bool:
        """Whether `size` more bytes would take `recipient`'s mailbox over its quota."""

    def expired(self, recipient: Key, now_ms: int) -> list[int]:
        """Mailbox ids older than the mailbox TTL."""

    def truncated_count(self, recipient: Key) -> int:
        """Messages dropped from `recipient`'s mailbox it was not told of yet."""

    def mailbox_size(self, recipient: Key) -> int:
        """Messages in `recipient`'s mailbox, durable or not."""

    def mailbox_counts(self) -> tuple[int, int]:
        """(mailboxes, messages in them), for the statistics."""

    def waiting_for(self, user_id: str, user_type: str | None, group: str | None) -> int:
        """Undelivered durable messages in the mailboxes of a user id, narrowed by
        user type and group when given (all in string form)."""

    def apply(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        """Fold one record into the state (at run time and at replay); for a
        `msg` record, the message stored (or the first one it repeats)."""

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy of the state (for the snapshot)."""

    def snapshot_view(self) -> dict[str, Any]:
        """What `to_state()` gives, for the snapshot writer, sharing what never changes."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot's."""


class CrmStore(Protocol):
    """What the CRM workflow needs of its durable state."""

    next_customer_db_id: int
    next_follow_up_id: int
    next_incoming_id: int

    def apply(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        """Fold one `crm_*` record into the state; what depends on the state
        (an incoming's `duplicate`, a customer's or follow-up's id)."""

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy for the snapshot."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot's."""

    def group_keys(self) -> list[str]:
        """The groups with CRM state."""

    def has_group(self, key: str) -> bool:
        """Whether a group has CRM state."""

    def accounts(self, key: str) -> Mapping[str, dict[str, Any]]:
        """A group's accounts by id, as stored (`synced_by` included)."""

    def account_elsewhere(self, key: str, acct: str) -> bool:
        """Whether another group than `key` has an account `acct`."""

    def seen(self, key: str, line: str) -> bool:
        """Whether an incoming `line` was already seen in the group."""

    def customer(self, key: str, customer_id: str) -> dict[str, Any] | None:
        """A group's customer (`customer_db_id` and its fields), or None."""

    def group_stats(self, key: str, day: str) -> dict[str, Any]:
        """The group's counters, "today" being `day`."""

    def account_stats(self, key: str, acct: str, day: str) -> dict[str, Any]:
        """An account's counters, "today" being `day`."""

    def account_list(self, key: str) -> list[dict[str, Any]]:
        """A group's accounts as the HTTP API lists them."""

    def page(self, key: str, kind: str, after: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Up to `limit` of a group's `customers`, `follow_ups` or `incoming`
        records numbered above `after`, in order, and whether more follow."""


class CodeStore(Protocol):
    """The durable overrides of the configured codes: by code, its entry
    (`group_id`, `name`, `enabled`), or None for a deleted code."""

    def apply(self, record: dict[str, Any]) -> None:
        """Fold a `code_put` or `code_del` record."""

    def overrides(self) -> Mapping[str, dict[str, Any] | None]:
        """The overrides, in the order they were first made."""

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy for the snapshot."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the overrides with a snapshot's."""


class TaskStore(Protocol):
    """The latest state of each user's tasks (`core.tasks`): by user id (comparison
    form), by task id (comparison form), the entry of its last update."""

    record_types: tuple[str, ...]

    def tasks_of(self, user: str) -> Mapping[str, dict[str, Any]]:
        """A user's task entries, least recently updated first."""

    def live(self, entry: dict[str, Any], now: int) -> bool:
        """Whether `entry` is still kept at `now` (ms): expired ones are never shown."""

    def apply(self, rec: dict[str, Any]) -> None:
        """Fold a `task` record."""

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy for the snapshot."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot's."""


class WebhookStore(Protocol):
    """The webhook outbox (`core.webhook_store` says what each part holds)."""

    record_types: tuple[str, ...]

    @property
    def seq(self) -> int:
        """The seq of the last event made."""

    @property
    def events(self) -> Mapping[int, dict[str, Any]]:
        """Events not yet acknowledged or dropped, by seq, oldest first."""

    @property
    def lanes(self) -> Mapping[str, Sequence[int]]:
        """Each lane's events (seqs), oldest first."""

    @property
    def checks(self) -> Mapping[int, int]:
        """Undelivered checks: message id -> when due (ms), in message-id order."""

    @property
    def online(self) -> Mapping[str, dict[str, Any]]:
        """Lane -> the data of its `user_online` event not followed by `user_offline`."""

    def head(self, lane: str) -> dict[str, Any] | None:
        """The oldest event of `lane`."""

    def __len__(self) -> int:
        """Events queued."""

    def apply(self, rec: dict[str, Any]) -> None:
        """Fold a `hook`, `hook_ack`, `hook_drop`, `hook_skip` or `hook_upto` record."""

    def observe(self, rec: dict[str, Any]) -> None:
        """Fold a direct message's `msg` or `status` record into the checks."""

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy for the snapshot."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot's."""
