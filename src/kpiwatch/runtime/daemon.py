"""Process lifecycle: signals, the main loop, a clean stop.

As rq's worker: the first SIGTERM/SIGINT lets current work finish, a second
exits at once. SIGHUP (or a change to a rule file) reloads the rules.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

import structlog

from kpiwatch.runtime.app import App

log = structlog.get_logger("kpiwatch.daemon")

RULES_POLL_SECONDS = 5.0


class Daemon:
    def __init__(self, app: App) -> None:
        self._app = app
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()  # set by any signal so the loop reacts at once

    def request_stop(self, signum: int, _: FrameType | None = None) -> None:
        if self._stop.is_set():
            log.warning("second signal: exiting now", signal=signal.Signals(signum).name)
            os._exit(128 + signum)  # worker threads would otherwise keep the process alive
        log.info(
            "stopping: finishing current work (signal again to exit at once)",
            signal=signal.Signals(signum).name,
        )
        self._stop.set()
        self._wake.set()

    def request_reload(self, signum: int, _: FrameType | None = None) -> None:
        self._reload.set()
        self._wake.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        self._app.start()
        signature = self._app.rules_signature()
        try:
            while not self._stop.is_set():
                self._wake.wait(RULES_POLL_SECONDS)
                self._wake.clear()
                if self._stop.is_set():
                    break
                current = self._app.rules_signature()
                if self._reload.is_set() or current != signature:
                    self._reload.clear()
                    signature = current
                    self._app.reload()
        finally:
            self._app.stop()
        log.info("stopped")
        return 0
