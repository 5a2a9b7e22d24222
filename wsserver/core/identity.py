"""Who a connection is, once authenticated: the principal behind it.

A value of the core (the hub keys sessions, principals and groups by it);
`wsserver.tokens` makes one from a verified token or an activation code.

An `Identity` is frozen, so the hub's record of a session and the connection
that presented it can share it without either changing what the other sees.
What changes is kept where it changes: the token's expiry by the connection
(a `refresh` moves it), a desktop client's group by the hub, which settles it
from the activation code and answers the settled identity (`Admit`,
`Authenticate`).
"""

from __future__ import annotations

from typing import Any

import attrs

from wsserver.protocol.envelope import id_key

__all__ = ["ADMIN_ROLE", "Identity"]

ADMIN_ROLE = "admin"


@attrs.frozen
class Identity:
    """The principal a connection authenticated as.

    JWT users have `user_id`; activation-code clients (seed 000 desktops) have
    `activation_code` and the code's group. `expires_at` (Unix seconds) is
    the token's as it was presented. `avatar` and `chat_role` (seed 002's
    `role: user|agent`) are the token's claims, carried in `from`.
    """

    user_id: Any = None
    user_type: Any = None
    username: str | None = None
    group_id: Any = None
    role: str | None = None
    rooms: tuple[str, ...] | None = None
    expires_at: float | None = None
    activation_code: str | None = None
    avatar: str | None = None
    chat_role: str | None = None

    def sender(self) -> dict[str, Any]:
        """The `from` of what this user sends (SPEC 13): `user_id`, `user_type`,
        `username`, and the token's `avatar` and `chat_role` when it has them."""
        party: dict[str, Any] = {"user_id": self.user_id, "user_type": self.user_type, "username": self.username}
        if self.avatar is not None:
            party["avatar"] = self.avatar
        if self.chat_role is not None:
            party["chat_role"] = self.chat_role
        return party

    @property
    def is_device(self) -> bool:
        """True for an activation-code (desktop client) connection."""
        return self.activation_code is not None

    @property
    def is_admin(self) -> bool:
        """Admin rights come from the `role: "admin"` claim only."""
        return self.role == ADMIN_ROLE

    @property
    def principal(self) -> tuple[str, ...]:
        """The key that groups a principal's connections (tabs, devices).

        Users and desktop clients have keys of different shapes, so no token
        can ever name the principal of an activation code.
        """
        if self.activation_code is not None:
            return ("device", self.activation_code)
        return ("user", id_key(self.user_type), id_key(self.user_id))

    @property
    def group_key(self) -> str:
        """The group id in its comparison form ("" for no group)."""
        return id_key(self.group_id)
