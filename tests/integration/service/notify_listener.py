#!/usr/bin/env python3
"""A stand-in for systemd's notification socket (sd_notify(3)): binds an AF_UNIX datagram
socket at PATH and appends every message it receives to LOG, one line per field, each prefixed
with whether MOUNTPOINT was a fuse.imagefs mount when the message arrived ("mounted READY=1" or
"unmounted STOPPING=1"). Runs until killed."""
import os
import socket
import sys

path, log, mountpoint = sys.argv[1:4]


def mounted():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[4] == mountpoint and fields[sep + 1] == "fuse.imagefs":
                return True
    return False


sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
with open(log, "a", buffering=1) as out:
    out.write("listening\n")
    while True:
        data = sock.recv(65536).decode("utf-8", "replace")
        state = "mounted" if mounted() else "unmounted"
        for field in data.split("\n"):
            if field:
                out.write(f"{state} {field}\n")
