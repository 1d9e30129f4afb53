#!/usr/bin/env python3
"""A stand-in for journald's native socket: receives sd_journal_send datagrams and writes
each entry as one JSON object per line, so a test can assert the structured fields."""
import json
import os
import socket
import struct
import sys


def parse(data):
    fields = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            # binary-safe form: KEY\n<le64 length><bytes>\n
            k = line
            (n,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            v = data[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        fields[k.decode()] = v.decode(errors="replace")
    return fields


def main():
    path, out = sys.argv[1], sys.argv[2]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    with open(out, "a", buffering=1) as f:
        f.write(json.dumps({"READY": "1"}) + "\n")
        while True:
            data, anc, _, _ = s.recvmsg(1 << 20, socket.CMSG_SPACE(4))
            if not data:
                # large entries arrive as a memfd passed with SCM_RIGHTS
                for level, kind, payload in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fd = struct.unpack("i", payload[:4])[0]
                        data = os.pread(fd, 1 << 20, 0)
                        os.close(fd)
            f.write(json.dumps(parse(data)) + "\n")


if __name__ == "__main__":
    main()
