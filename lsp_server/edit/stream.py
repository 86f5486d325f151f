"""An edit's text streamed into a client's preview while the model writes it (`infill/editStream`).

On a CPU an edit takes seconds; a client that opts in (`capabilities.experimental.infillEditStream`:
`true`, or `{"intervalMs": n}` to choose the pace) sees the replacement grow instead of a spinner. The
stream is only a preview: the edit itself still arrives as today's versioned `workspace/applyEdit` (or
the command's result), so a notification never changes a file.

Each notification carries the whole replacement so far (complete lines only), never a delta, so a client
that misses or drops one still shows the right text; the last one says `done`, with the final text (the
`newText` of the edit) or the `error` that ended the edit. Fields: `{id, uri, version, range, text, done,
error?, cancelled?}`, `id` being the `workspace/executeCommand` request's id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

STREAM_NOTIFICATION = "infill/editStream"
STREAM_CAPABILITY = "infillEditStream"
DEFAULT_INTERVAL_MS = 100  # a redraw every tenth of a second reads as live without flooding the client
MAX_INTERVAL_MS = 5000

Send = Callable[[dict[str, Any]], None]


def stream_interval(opt_in: Any) -> float | None:
    """Seconds between two drafts for a client's opt-in value; None when it did not opt in.

    `true` takes the default pace; `{"intervalMs": n}` another one (0: every line, what tests use); an
    unusable interval falls back to the default rather than failing the edit."""
    if opt_in is True:
        return DEFAULT_INTERVAL_MS / 1000
    if not isinstance(opt_in, dict):
        return None
    ms = opt_in.get("intervalMs", DEFAULT_INTERVAL_MS)
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 <= ms <= MAX_INTERVAL_MS:
        ms = DEFAULT_INTERVAL_MS
    return ms / 1000


class EditStream:
    """One edit's drafts to one client: throttled, each newer than the last, ended exactly once.

    `draft` is called from the worker thread that generates, `finish`/`fail` from the event loop once
    generation is over; after the end nothing more is sent (a late draft of a cancelled edit is dropped).
    """

    def __init__(self, send: Send, head: dict[str, Any], interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self._head = head  # id, uri, version, range: the same in every notification
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._sent_at: float | None = None
        self._text = ""
        self._ended = False

    def draft(self, text: str) -> None:
        """The replacement so far; sent unless it is empty, unchanged, or the last one was too recent."""
        with self._lock:
            now = self._clock()
            if self._ended or not text.strip() or text == self._text:
                return
            if self._sent_at is not None and now - self._sent_at < self._interval:
                return
            self._sent_at, self._text = now, text
            self._send(self._head | {"text": text, "done": False})

    def finish(self, text: str) -> None:
        """The edit is written and checked: its final text (what the edit will put in the range)."""
        self._end({"text": text, "done": True})

    def fail(self, message: str, cancelled: bool = False) -> None:
        """The edit ended without a result: the client drops or annotates its preview."""
        self._end({"text": self._text, "done": True, "error": message, "cancelled": cancelled})

    def _end(self, tail: dict[str, Any]) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
            self._send(self._head | tail)
