# SPDX-License-Identifier: GPL-2.0-or-later
"""What the fake Moonraker and OctoPrint share: a threading HTTP server on 127.0.0.1 that
prints its port on stdout and serves until its stdin reaches EOF, so a crashed test leaves no
server behind."""
import http.server
import sys
import threading


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # clients that give up (timeouts, reply-size limits) are part of the tests
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def serve(handler, port):
    """Serves handler on 127.0.0.1:port (0: an ephemeral one) until stdin is closed."""
    server = Server(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()
    server.shutdown()
