"""Logging set-up: text or JSON lines, and a last line of defence against secrets.

Invariants:

- No token or activation code reaches a log sink. The code never logs them on
  purpose; `RedactSecrets` additionally scrubs anything that looks like
  `token=…`, `activation_code=…`, a Bearer credential or a JWT from every
  record, including exception text.
- One record is one line, whatever a client sent. Every client-supplied value
  that is logged (ids, names, paths, methods, addresses) goes through `clean`
  first: control characters escaped, at most `MAX_LOGGED` characters. That
  holds under an embedding host's own handlers too. With wsserver's handler,
  `RedactSecrets` also escapes control characters in every formatted message,
  and `JsonFormatter` writes the characters JSON leaves raw but some readers
  take for line breaks (DEL, C1, U+2028/9) as `\\uXXXX`. Exception tracebacks
  stay multi-line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_PATTERNS = [
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r"(?i)((?:token|activation_code|api_key|secret)[\"']?\s*[=:]\s*[\"']?)[^\s&\"',;}]+"), r"\1[redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
]


MAX_LOGGED = 200
"""Characters of one client-supplied value in a log line (SPEC 5)."""

# C0, DEL, C1, the Unicode line and paragraph separators, and the bidi
# controls that can make a line read other than it is written
_CONTROLS = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))] + list(
    "\u2028\u2029\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_UNSAFE = re.compile("[" + "".join(_CONTROLS) + "]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPES = {
    c: _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
    for c in _CONTROLS
}
_JSON_RAW = re.compile("[" + "".join(c for c in _CONTROLS if ord(c) >= 0x7F) + "]")


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape (`\\n`, `\\x1b`,
    `\\u2028`): printable, and one line."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(lambda m: _ESCAPES[m.group()], text)


def clean(value: object, limit: int = MAX_LOGGED) -> str:
    """A client-supplied value as it may appear in a log line: control characters
    escaped, cut to `limit` characters (escapes included, never split) with a
    marker saying how many characters were left out."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit and _UNSAFE.search(text) is None:
        return text
    out: list[str] = []
    used = 0
    for i, ch in enumerate(text):
        piece = _ESCAPES.get(ch, ch)
        used += len(piece)
        if used > limit:
            return "".join(out) + f"...(+{len(text) - i} chars)"
        out.append(piece)
    return "".join(out)


def redact(message: str) -> str:
    """Replace credential-looking parts of `message`."""
    for pattern, repl in _PATTERNS:
        message = pattern.sub(repl, message)
    return message


class RedactSecrets(logging.Filter):
    """Rewrites every record's message (and exception text) through `redact`; the
    message also through `escape_controls`, so that it stays one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.msg = escape_controls(redact(message))
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` fields."""

    _STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_text:
            out["exc"] = record.exc_text
        line = json.dumps(out, ensure_ascii=False, default=str)
        if _JSON_RAW.search(line) is None:
            return line
        # only inside JSON strings: the same text, escaped the JSON way
        return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Configure the `wsserver` loggers; safe to call again (reload)."""
    root = logging.getLogger("wsserver")
    root.setLevel(level.upper())
    root.propagate = False
    for handler in list(root.handlers):
        if getattr(handler, "_wsserver", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._wsserver = True  # type: ignore[attr-defined]
    handler.addFilter(RedactSecrets())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)


def reconfigure_logging(level: str, fmt: str) -> None:
    """Apply a reloaded `[log]`: redo `setup_logging` when wsserver installed its own
    handler (the CLI); else only set the level, the embedding host owns the handlers."""
    root = logging.getLogger("wsserver")
    if any(getattr(h, "_wsserver", False) for h in root.handlers):
        setup_logging(level, fmt)
    else:
        root.setLevel(level.upper())
