"""Process lifecycle: signals, the main loop, a clean stop.

As rq's worker: the first SIGTERM/SIGINT lets current work finish, a second
exits at once. SIGHUP (or a change to a rule file) reloads the rules.
Under systemd (``Type=notify``) it reports READY, RELOADING and STOPPING, and
pings the watchdog only while the scheduler's heartbeat is fresh, so a stuck
scheduler gets the unit restarted.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType

import structlog

from kpiwatch.runtime.app import App
from kpiwatch.runtime.systemd import SystemdNotifier

log = structlog.get_logger("kpiwatch.daemon")

RULES_POLL_SECONDS = 5.0


class Daemon:
    def __init__(self, app: App, notifier: SystemdNotifier | None = None) -> None:
        self._app = app
        self._systemd = notifier
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
        try:
            self._app.start()
        except BaseException:
            self._app.close()
            raise
        systemd = self._systemd
        if systemd is not None:
            systemd.ready(self._status_line())
        watchdog = systemd.watchdog_interval() if systemd is not None else None
        tick = min(RULES_POLL_SECONDS, watchdog) if watchdog else RULES_POLL_SECONDS
        signature = self._app.rules_signature()
        next_poll = 0.0
        try:
            while not self._stop.is_set():
                if systemd is not None and watchdog and self._app.heartbeat_fresh():
                    systemd.watchdog()
                self._wake.wait(tick)
                self._wake.clear()
                if self._stop.is_set():
                    break
                if not self._reload.is_set() and time.monotonic() < next_poll:
                    continue
                next_poll = time.monotonic() + RULES_POLL_SECONDS
                current = self._app.rules_signature()
                if self._reload.is_set() or current != signature:
                    self._reload.clear()
                    signature = current
                    if systemd is not None:
                        systemd.reloading()
                    self._app.reload()
                    if systemd is not None:
                        systemd.ready(self._status_line())
        finally:
            if systemd is not None:
                systemd.stopping()
            self._app.stop()
        log.info("stopped")
        return 0

    def _status_line(self) -> str:
        kpis = len(self._app.runner.workspace.rules.kpis)
        return f"watching {kpis} KPIs; serving {self._app.http_url}"
