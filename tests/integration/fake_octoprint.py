#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A stand-in for OctoPrint's REST API, for the OctoPrint gate tests and the demo.

Usage: fake_octoprint.py ROOT CALLS_LOG [PORT]
Listens on 127.0.0.1 (PORT, or an ephemeral one) and prints the port on stdout. It exits when
its stdin reaches EOF, so a crashed test leaves no server behind.

What it answers, as OctoPrint does (docs.octoprint.org api/connection.html, api/job.html):
  GET  /api/connection  {"current": {"state", "port", "baudrate", "printerProfile"}, "options"}
                        ("Closed" with nulls while not connected: printer/standard.py)
  GET  /api/job         {"job": {...}, "progress": {...}, "state": "Operational" | ...}
  POST /api/connection  {"command": "connect", "port", "baudrate", "printerProfile"} and
                        {"command": "disconnect"}: 204
Every /api/ request needs X-Api-Key == API_KEY, else 403 (OctoPrint's answer to an unknown
key). Every request is appended to CALLS_LOG ("GET /api/job", "POST disconnect",
"POST connect port=... baudrate=... profile=...").

While connected it holds the board's tty open the way OctoPrint's pyserial does: the pty
behind the testbed's tty, opened outside the umockdev preload, with flock(LOCK_EX | LOCK_NB)
(pyserial's exclusive=True); as root it also holds, with O_PATH, a node carrying the tty's
device number as the daemon sees it (166:n), since the daemon matches /proc/PID/fd by that.
A port string (/dev/ttyACMn, a /dev/serial/by-id link) is resolved inside the testbed ROOT
at each connect, so the port names a re-enumerated board correctly.

Knobs (POST /_fake/<name>, body JSON):
  state {"state": "Printing"}   the job state while connected ("Operational" by default)
  mode {"mode": "http500"|"slow"|"ignore-disconnect"|"normal"}
"""
import http.server
import json
import os
import fcntl
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
import fake_http  # noqa: E402  (beside this script)

API_KEY = "OCTOPRINTKEY0123456789ABCDEF0000"
SLOW_S = 5.0
lock = threading.Lock()
st = {
    "root": "",
    "log": "",
    "conn": None,  # {"port", "baudrate", "printerProfile"} while connected
    "fds": [],
    "state": "Operational",
    "mode": "normal",
    "nodes": 0,
    "open_failed": False,
}


def log_call(text):
    with open(st["log"], "a") as f:
        f.write(text + "\n")


def resolve(port):
    """The pty behind a port string of the testbed, or None."""
    path = st["root"] + port
    for _ in range(16):
        if not os.path.islink(path):
            return None
        target = os.readlink(path)
        if target.startswith("/dev/pts/"):
            return target
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    return None


def tty_index(port):
    """n of the ttyACMn a port string names in the testbed."""
    path = st["root"] + port
    for _ in range(16):
        name = os.path.basename(path)
        if name.startswith("ttyACM"):
            return int(name[6:])
        if not os.path.islink(path):
            return None
        path = os.path.normpath(os.path.join(os.path.dirname(path),
                                             os.readlink(path)))
    return None


def hold(port):
    pts = resolve(port)
    if pts is None:
        return False
    fds = []
    t = os.open(pts, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    fds.append(t)
    try:
        fcntl.flock(t, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(t)
        return False
    idx = tty_index(port)
    if os.geteuid() == 0 and idx is not None:
        st["nodes"] += 1
        node = "%s/fake-octoprint-node-%d-%d" % (os.path.dirname(st["log"]), os.getpid(),
                                                 st["nodes"])
        try:
            os.mknod(node, 0o600 | 0o020000, os.makedev(166, idx))
            fds.append(os.open(node, os.O_PATH))
            os.unlink(node)
        except OSError:
            pass
    st["fds"] = fds
    return True


def release():
    for fd in st["fds"]:
        os.close(fd)
    st["fds"] = []
    st["conn"] = None
    st["open_failed"] = False


def connection_body():
    c = st["conn"]
    if c is None:
        cur = {"state": "Closed", "port": None, "baudrate": None, "printerProfile": None}
    else:
        cur = {"state": "Offline after error" if st["open_failed"] else st["state"],
               "port": c["port"], "baudrate": c["baudrate"],
               "printerProfile": c["printerProfile"]}
    return {"current": cur, "options": {
        "ports": [], "baudrates": [250000, 115200], "printerProfiles": [
            {"name": "Default", "id": "_default"}], "portPreference": None,
        "baudratePreference": None, "printerProfilePreference": "_default",
        "autoconnect": False}}


def job_body():
    state = "Offline" if st["conn"] is None else st["state"]
    if st["open_failed"]:
        state = "Offline after error"
    return {"job": {"file": {"name": "part.gcode" if state == "Printing" else None}},
            "progress": {"completion": 42.0 if state == "Printing" else None},
            "state": state}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, code, obj=None):
        body = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(code)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return None

    def authorized(self):
        if self.headers.get("X-Api-Key") == API_KEY:
            return True
        self.reply(403, {"error": "You don't have the permission to access the requested "
                                  "resource."})
        return False

    def faulty(self):
        mode = st["mode"]
        if mode == "http500":
            self.reply(500, {"error": "Internal Server Error"})
            return True
        if mode == "slow":
            time.sleep(SLOW_S)
        return False

    def do_GET(self):
        with lock:
            log_call("GET " + self.path)
            if not self.path.startswith("/api/"):
                self.reply(404, {"error": "Not found"})
            elif not self.authorized() or self.faulty():
                pass
            elif self.path == "/api/connection":
                self.reply(200, connection_body())
            elif self.path == "/api/job":
                self.reply(200, job_body())
            else:
                self.reply(404, {"error": "Not found"})

    def do_POST(self):
        data = self.body()
        with lock:
            if self.path.startswith("/_fake/") and isinstance(data, dict):
                name = self.path[len("/_fake/"):]
                st[name] = data.get(name, st.get(name))
                log_call("KNOB %s=%s" % (name, st[name]))
                self.reply(204)
                return
            if self.path != "/api/connection" or not isinstance(data, dict):
                log_call("POST " + self.path)
                self.reply(400, {"error": "Bad request"})
                return
            cmd = data.get("command")
            if cmd == "connect":
                log_call("POST connect port=%s baudrate=%s profile=%s" % (
                    data.get("port"), data.get("baudrate"), data.get("printerProfile")))
            else:
                log_call("POST %s" % cmd)
            if not self.authorized() or self.faulty():
                return
            if cmd == "disconnect":
                if st["mode"] != "ignore-disconnect":
                    release()
                self.reply(204)
            elif cmd == "connect":
                release()
                port = data.get("port")
                st["conn"] = {"port": port, "baudrate": data.get("baudrate"),
                              "printerProfile": data.get("printerProfile") or "_default"}
                # what OctoPrint shows when it cannot open the port
                st["open_failed"] = not port or not hold(port)
                self.reply(204)
            else:
                self.reply(400, {"error": "Unknown command"})

    def log_message(self, fmt, *args):
        sys.stderr.write("fake_octoprint: " + (fmt % args) + "\n")


def main():
    st["root"] = sys.argv[1].rstrip("/")
    st["log"] = sys.argv[2]
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    fake_http.serve(Handler, port)


if __name__ == "__main__":
    main()
