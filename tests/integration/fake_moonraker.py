#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A stand-in for Moonraker's object query, for the print-state gate tests.

Listens on 127.0.0.1 with an ephemeral port and prints that port on stdout. The reply to
GET [/<mode>]/printer/objects/query?print_stats depends on <mode>, so one server answers
every case in parallel; without a mode prefix the current default (PUT /_fake/state/<mode>)
applies. Modes: any print state ("printing", "standby", ...; unknown words are sent as
they are), "malformed" (cut JSON), "noresult" (valid JSON of the wrong shape), "http500",
"slow" (answers after SLOW_S seconds), "huge" (a reply far beyond any real one), "auth"
(401 unless the X-Api-Key header is API_KEY, then "standby"), "klippy-down" (503, as
Moonraker answers while Klipper is not connected).

Power devices (Moonraker's [power NAME]): POST [/<mode>]/machine/device_power/device?device=
NAME&action=on|off switches NAME and answers {"result": {NAME: state}}; GET with device=NAME
reads it. Device "broken" answers HTTP 500, device "locked" stays "on" (a device with
locked_while_printing). Every switch is appended as "NAME on|off" to the file named by the
third argument (if given): the test turns those lines into power cuts of the simulated board.
It exits when its stdin reaches EOF, so a crashed test leaves no server behind.
"""
import http.server
import json
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
import fake_http  # noqa: E402  (beside this script)

SLOW_S = 5.0
API_KEY = "0123456789abcdef"
default_mode = ["standby"]
power_log = [None]
power_state = {}
power_lock = threading.Lock()


def body_for(state):
    return json.dumps({"result": {"eventtime": 1234.5, "status": {"print_stats": {
        "filename": "part.gcode", "total_duration": 10.0, "print_duration": 8.0,
        "filament_used": 12.5, "state": state, "message": ""}}}}).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, code, body, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["_fake", "state"]:
            default_mode[0] = parts[2]
            self.reply(200, b"{}")
        else:
            self.reply(404, b"{}")

    def power(self, post):
        path, _, query = self.path.partition("?")
        parts = path.strip("/").split("/")
        if len(parts) == 4:
            parts.pop(0)
        args = urllib.parse.parse_qs(query)
        if post and self.headers.get("Content-Length"):
            self.rfile.read(int(self.headers["Content-Length"]))
        if parts != ["machine", "device_power", "device"] or "device" not in args:
            return False
        dev = args["device"][0]
        action = args.get("action", [None])[0]
        if dev == "broken":
            self.reply(500, b'{"error": {"code": 500, "message": "device failed"}}')
            return True
        with power_lock:
            if post and action in ("on", "off") and dev != "locked":
                power_state[dev] = action
                if power_log[0]:
                    with open(power_log[0], "a") as f:
                        f.write("%s %s\n" % (dev, action))
            state = "on" if dev == "locked" else power_state.get(dev, "on")
        self.reply(200, json.dumps({"result": {dev: state}}).encode())
        return True

    def do_POST(self):
        if not self.power(True):
            self.reply(404, b'{"error": {"code": 404, "message": "Not Found"}}')

    def do_GET(self):
        path, _, query = self.path.partition("?")
        parts = path.strip("/").split("/")
        mode = default_mode[0]
        if self.power(False):
            return
        if len(parts) == 4:
            mode = parts.pop(0)
        if parts != ["printer", "objects", "query"] or query != "print_stats":
            self.reply(404, b'{"error": {"code": 404, "message": "Not Found"}}')
            return
        if mode == "auth" and self.headers.get("X-Api-Key") != API_KEY:
            self.reply(401, b'{"error": {"code": 401, "message": "Unauthorized"}}')
        elif mode == "auth":
            self.reply(200, body_for("standby"))
        elif mode == "malformed":
            self.reply(200, b'{"result": {"status": {"print_stats": {"state": "stan')
        elif mode == "noresult":
            self.reply(200, b'{"result": {"status": {}}}')
        elif mode == "klippy-down":
            self.reply(503, b'{"error": {"code": 503, "message": "Klippy Host not connected"}}')
        elif mode == "http500":
            self.reply(500, b'{"error": {"code": 500, "message": "Internal Server Error"}}')
        elif mode == "slow":
            time.sleep(SLOW_S)
            self.reply(200, body_for("standby"))
        elif mode == "huge":
            self.reply(200, b" " * (256 * 1024) + body_for("standby"))
        else:
            self.reply(200, body_for(mode))

    def log_message(self, fmt, *args):
        sys.stderr.write("fake_moonraker: " + (fmt % args) + "\n")


def main():
    # optional: a fixed port (the default address 7125) and the initial mode
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if len(sys.argv) > 2:
        default_mode[0] = sys.argv[2]
    if len(sys.argv) > 3:
        power_log[0] = sys.argv[3]
    fake_http.serve(Handler, port)


if __name__ == "__main__":
    main()
