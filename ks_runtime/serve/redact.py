"""Keeps the token out of ks-serve's logs. A browser cannot set a WebSocket's headers, so /ws takes the token in its
query string, and uvicorn logs request lines with their query strings: `"WebSocket /ws?token=..." [accepted]` on
`uvicorn.error`, and each HTTP request on `uvicorn.access`. A filter on both loggers rewrites `token=VALUE` to
`token=***` before any handler sees the record.
"""

from __future__ import annotations

import logging
import re

# The value ends at the next parameter, a blank or a quote (uvicorn writes a query's `"` as %22, so none is inside).
TOKEN_PARAMETER = re.compile(r"(token=)[^&\s\"']*", re.IGNORECASE)
UVICORN_LOGGERS = ("uvicorn.error", "uvicorn.access")


def redact(text: str) -> str:
    return TOKEN_PARAMETER.sub(r"\1***", text)


class TokenRedactor(logging.Filter):
    """Rewrites a record whose message holds `token=...`. The %-style arguments stay arguments where redacting
    them one by one gives the redacted message: uvicorn's access formatter reads the five arguments of an access
    record (client, method, path, HTTP version, status) by position. Otherwise the record becomes the redacted
    message with no arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: logging reports it itself, as it would have
            return True
        clean = redact(message)
        if clean == message:
            return True
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
            if record.getMessage() == clean:
                return True
        record.msg, record.args = clean, ()
        return True


REDACTOR = TokenRedactor()


def redact_uvicorn_logs() -> None:
    """Install the filter on uvicorn's loggers (once: addFilter skips a filter already there). uvicorn's logging
    configuration (dictConfig) replaces their handlers but leaves their filters."""
    for name in UVICORN_LOGGERS:
        logging.getLogger(name).addFilter(REDACTOR)
