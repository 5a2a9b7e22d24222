"""Logging set-up: text or JSON lines, and a last line of defence against secrets.

Invariant: no token or activation code reaches a log sink. The code never
logs them on purpose; `RedactSecrets` additionally scrubs anything that looks
like `token=…`, `activation_code=…`, a Bearer credential or a JWT from every
record, including exception text.
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


def redact(message: str) -> str:
    """Replace credential-looking parts of `message`."""
    for pattern, repl in _PATTERNS:
        message = pattern.sub(repl, message)
    return message


class RedactSecrets(logging.Filter):
    """Rewrites every record's message (and exception text) through `redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.msg = redact(message)
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
        return json.dumps(out, ensure_ascii=False, default=str)


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
