"""The web console the daemon serves: incidents, their series and anomon's health.

Flask builds the pages (Jinja escapes every value, forms work without JavaScript) and
waitress serves them: a production WSGI server in pure Python with a fixed pool of
threads, so a long-running threaded daemon gets bounded concurrency, request and body
limits and clean shutdown without a second process or an event loop — the store is
synchronous SQLAlchemy, which a thread per request suits. It listens beside
``/metrics`` (``[web] listen``), on loopback unless configured, and asks for a
password or token off loopback (:mod:`.auth`).
"""

from __future__ import annotations

import logging
import threading

from anomon import store
from anomon.config import Config
from anomon.errors import AnomonError
from anomon.timeutil import Clock, utcnow

log = logging.getLogger("anomon.web")

THREADS = 4  # requests served at once; more wait in waitress' queue


class Console:
    """A running console; :meth:`close` stops it."""

    def __init__(self, config: Config, engine: store.Engine, *, clock: Clock = utcnow) -> None:
        from waitress.server import create_server

        from anomon.web.app import create_app

        self.address = config.web.address(config.daemon)
        host, _, port = self.address.rpartition(":")
        app = create_app(config, engine, clock=clock)
        try:
            self._server = create_server(
                app,
                host=host.strip("[]"),
                port=int(port),
                threads=THREADS,
                ident="anomon",
                channel_timeout=30,
                max_request_body_size=64 * 1024,
                clear_untrusted_proxy_headers=True,
            )
        except OSError as exc:
            raise AnomonError(
                f"cannot serve the console on {self.address}: {exc.strerror}"
            ) from None
        self._thread = threading.Thread(target=self._run, name="anomon-web", daemon=True)
        self._thread.start()
        scheme_host = f"http://{self.address}"
        log.info("console on %s/", scheme_host)

    def _run(self) -> None:
        try:
            self._server.run()
        except Exception:  # a closed socket at stop, or a bug: the daemon goes on
            log.debug("console server ended", exc_info=True)

    def close(self) -> None:
        """Stop serving (requests in progress are cut)."""
        self._server.close()
        self._server.task_dispatcher.shutdown(timeout=5)
        self._thread.join(timeout=5)


def start_console(config: Config, engine: store.Engine) -> Console | None:
    """Serve the console of ``config`` over ``engine``; None when ``[web]`` is off or its
    address cannot be had (said once in the log: the daemon goes on without it)."""
    if not config.web.enabled:
        return None
    try:
        return Console(config, engine)
    except AnomonError as exc:
        log.error("%s; the daemon goes on without its console", exc)
        return None
