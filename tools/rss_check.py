#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Memory check for the benchmark report: N distinct clients (autobound sockets), one echo each,
# against a running unixgram-echo; prints the server's RSS before and after, and the growth.
#
#   tools/rss_check.py --echo build/examples/unixgram-echo [--clients 100000]
import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def run_clients(path, n, window=64):
    """n distinct autobound clients, `window` of them in flight at a time; every reply verified."""
    done = 0
    while done < n:
        batch = []
        for i in range(min(window, n - done)):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.bind("")  # autobind: a fresh abstract name, i.e. a distinct client
            payload = b"client %d" % (done + i)
            s.sendto(payload, path)
            batch.append((s, payload))
        for s, payload in batch:
            r, _, _ = select.select([s], [], [], 10)
            if not r:
                raise RuntimeError("no reply within 10 s")
            if s.recv(100) != payload:
                raise RuntimeError("wrong reply")
            s.close()
        done += len(batch)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--echo", required=True)
    ap.add_argument("--clients", type=int, default=100000)
    ap.add_argument("--warmup", type=int, default=5000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "echo.sock")
    server = subprocess.Popen([args.echo, "--path", path, "--log-level", "warn"], stdout=subprocess.PIPE)
    try:
        line = server.stdout.readline().decode()
        if not line.startswith("listening on"):
            raise RuntimeError("server did not start")
        run_clients(path, args.warmup)
        before, fds_before = rss_kib(server.pid), fd_count(server.pid)
        run_clients(path, args.clients)
        after, fds_after = rss_kib(server.pid), fd_count(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        os.rmdir(tmp) if os.path.isdir(tmp) and not os.listdir(tmp) else None
    result = {"clients": args.clients, "rss_before_kib": before, "rss_after_kib": after,
              "rss_growth_kib": after - before, "fds_before": fds_before, "fds_after": fds_after}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.clients} distinct clients: server RSS {before} KiB -> {after} KiB "
              f"(growth {after - before} KiB), fds {fds_before} -> {fds_after}")
    return 0 if after - before <= 10 * 1024 and fds_after == fds_before else 1


if __name__ == "__main__":
    sys.exit(main())
