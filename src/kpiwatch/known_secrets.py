"""The exact secret values this process knows, so :func:`kpiwatch.errors.redact` hides them.

Patterns catch the usual shapes (``user:password@`` in a URL, ``?token=``, ``Bearer``,
Slack tokens), but not a password printed on its own, a header value, or a token in
a library's message. The composition root (:class:`kpiwatch.runtime.app.App` and the
CLI's settings and rules loading) registers the secrets of the settings and the rules
here once they are loaded, and again on a reload.

Why module state: redaction runs in log processors (structlog's, and the stdlib
formatter that renders the records of urllib3, uvicorn, APScheduler ...) and in
error constructors, on threads no object of ours is handed to. One process-wide
set, written only by the composition root, is the only handle all of them share.
Values are only ever added: a fetch of a source removed by a reload may still be
running and log its old header.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from urllib.parse import quote

# Shorter values are ignored: a 4-character password such as "test" or "main" would
# also mask every ordinary occurrence of that word in logs and pages, and a secret
# this short is no secret anyway.
MIN_LENGTH = 6

_lock = threading.Lock()
_values: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None


def register(values: Iterable[str | None]) -> None:
    """Add secret values (their URL-quoted forms too); short or empty ones are ignored."""
    global _values, _pattern
    new = set()
    for value in values:
        if value is None or len(value) < MIN_LENGTH:
            continue
        new.add(value)
        # a password or token inside a URL is printed percent-encoded
        new.add(quote(value, safe=""))
        new.add(quote(value))
    with _lock:
        if new <= _values:
            return
        _values = _values | new
        # longest first: a secret that contains another is replaced whole
        ordered = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))


def hide(text: str, mask: str = "***") -> str:
    """``text`` with every registered secret value replaced by ``mask``."""
    pattern = _pattern
    if pattern is None:
        return text
    return pattern.sub(mask, text)


def forget_all() -> None:
    """Empty the registry (tests that need a clean process state)."""
    global _values, _pattern
    with _lock:
        _values = frozenset()
        _pattern = None
