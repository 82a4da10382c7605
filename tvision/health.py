"""The launcher's own health endpoint: readiness that knows about dead backend stubs.

Triton 2.51 answers ``/v2/health/ready`` with 200 while a python-backend stub is dead and
every request routed to it fails. ``tvision serve --health-port`` answers:

- ``GET /ready``: 200 while the server is ready and every model has all its stubs alive
  (``TritonServer.healthy``), 503 from a stub's death until its model is reloaded;
- ``GET /live``: 200 while tritonserver runs, 503 once it has exited.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tvision.server import TritonServer


class HealthEndpoint:
    def __init__(self, server: TritonServer, address: str, port: int) -> None:
        triton = server

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/ready":
                    ok = triton.healthy()
                elif self.path == "/live":
                    ok = triton.process is not None and triton.process.poll() is None
                else:
                    self.send_error(404, "GET /ready or /live")
                    return
                body = b"ok\n" if ok else b"not ready\n"
                self.send_response(200 if ok else 503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:  # probes every second: stay quiet
                return

        self._httpd = ThreadingHTTPServer((address, port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> HealthEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
