"""Routing: which handler answers a method on a path, and the path's parameters."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

import attrs

from wsserver.net.http.request import HttpRequest
from wsserver.net.http.response import HttpError, HttpResponse

__all__ = ["Handler", "Router"]


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@attrs.frozen
class _Route:
    # One pattern: a literal segment is a str, a parameter is ("name",).
    segments: tuple[str | tuple[str], ...]
    handlers: dict[str, Handler]

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sort key: literal segments (0) beat parameters (1), leftmost first."""
        return tuple(0 if isinstance(s, str) else 1 for s in self.segments)

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.segments, segments, strict=True):
            if isinstance(want, str):
                if want != got:
                    return None
            else:
                params[want[0]] = got
        return params


class Router:
    """Maps ``(method, path)`` to a handler and the path's ``{name}`` parameters.

    A pattern such as ``/api/users/{user_id}/online`` matches a path with the
    same number of segments; ``{name}`` captures one percent-decoded segment.
    Among the patterns that match both path and method, the one whose literal
    segments come first wins, whatever the registration order (so
    ``/api/rooms/stats`` beats ``/api/rooms/{room}``). A path that matches only
    with other methods is a 405 with ``Allow``; no match at all is a 404.
    ``HEAD`` is answered by the ``GET`` handler.
    """

    def __init__(self) -> None:
        # Keyed by shape (parameters as None): patterns that differ only in
        # parameter names would be ambiguous, so they are one route.
        self._routes: dict[tuple[str | None, ...], _Route] = {}

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """Register ``handler`` for ``method`` on ``pattern``.

        A duplicate, or the same shape with other parameter names, is a ValueError.
        """
        if not pattern.startswith("/"):
            raise ValueError(f"route pattern must start with '/': {pattern!r}")
        segments: list[str | tuple[str]] = []
        for part in pattern[1:].split("/"):
            param = _PARAM.fullmatch(part)
            if param:
                if (param[1],) in segments:
                    raise ValueError(f"duplicate parameter {param[1]!r} in {pattern!r}")
                segments.append((param[1],))
            elif "{" in part or "}" in part:
                raise ValueError(f"bad route segment {part!r} in {pattern!r}")
            else:
                segments.append(part)
        shape = tuple(s if isinstance(s, str) else None for s in segments)
        route = self._routes.setdefault(shape, _Route(tuple(segments), {}))
        if route.segments != tuple(segments):
            raise ValueError(f"{pattern!r} conflicts with another pattern's parameter names")
        method = method.upper()
        if method in route.handlers:
            raise ValueError(f"route already registered: {method} {pattern}")
        route.handlers[method] = handler

    def resolve(self, method: str, raw_path: str) -> tuple[Handler, dict[str, str]]:
        """The handler and parameters for ``method`` on ``raw_path`` (not yet decoded).

        Raises ``HttpError(404)`` or ``HttpError(405)`` (with an ``Allow`` header).
        """
        try:
            segments = [unquote(s, errors="strict") for s in raw_path[1:].split("/")]
        except UnicodeDecodeError:
            raise HttpError(400, "http_bad_target") from None
        lookup = "GET" if method == "HEAD" else method
        best: tuple[_Route, dict[str, str]] | None = None
        allowed: set[str] = set()
        for route in self._routes.values():
            params = route.match(segments)
            if params is None:
                continue
            allowed.update(route.handlers)
            if lookup in route.handlers and (
                best is None or route.specificity < best[0].specificity
            ):
                best = (route, params)
        if best is not None:
            return best[0].handlers[lookup], best[1]
        if not allowed:
            raise HttpError(404, "not_found")
        if "GET" in allowed:
            allowed.add("HEAD")
        allow = ", ".join(sorted(allowed))
        raise HttpError(405, "http_method", headers=(("Allow", allow),))

