#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Black-box tests of the benchmark's load generator, unixgram-bench: it must drive a real server and catch
# every kind of bad reply, since the benchmark's figures are only as good as its checks.
"""Run as: python3 bench_tool.py --echo /path/to/unixgram-echo (UNIXGRAM_BENCH names unixgram-bench).

Against unixgram-echo, a short verified load must pass, unconnected and with --connect. Against a Python echo
that spoils exactly one reply (alters a byte, truncates it, swaps it with the next, or drops it), unixgram-bench
must exit 1 and count exactly that one fault under the right name.
"""

import json
import os
import socket
import subprocess
import sys
import threading

from echo_harness import IO_TIMEOUT, EchoCase, main

BENCH = os.environ.get("UNIXGRAM_BENCH")
# Far above a short run's length (0.3 s of load, at most 1 s of drain); a failure guard, not a timing.
RUN_BOUND = 30.0


class FaultyEcho:
    """A one-thread Python echo on a pathname that spoils the `nth` datagram it receives (counting from 1):
    'alter' flips its last byte, 'truncate' drops its last byte, 'swap' sends it after the next one, 'drop'
    never answers it. Every other datagram is echoed unchanged, in order."""

    def __init__(self, path, fault, nth=3):
        self.fault = fault
        self.nth = nth
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.05)
        self.stopping = threading.Event()
        self.spoiled = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _reply(self, data, peer):
        try:
            self.sock.sendto(data, peer)
        except OSError:  # the load generator has closed that client: nothing to answer
            pass

    def _serve(self):
        count = 0
        held = None
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(65536)
            except socket.timeout:
                if held is not None:  # 'swap' with no next datagram: send it late rather than never
                    self._reply(*held)
                    held = None
                continue
            count += 1
            if count != self.nth:
                self._reply(data, peer)
                if held is not None:
                    self._reply(*held)
                    held = None
                continue
            self.spoiled = True
            if self.fault == "alter":
                self._reply(data[:-1] + bytes([data[-1] ^ 0x5A]), peer)
            elif self.fault == "truncate":
                self._reply(data[:-1], peer)
            elif self.fault == "swap":
                held = (data, peer)
            # 'drop': no reply at all

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=IO_TIMEOUT)
        self.sock.close()


class BenchToolTest(EchoCase):
    def run_bench(self, path, *args):
        """Runs unixgram-bench --json against `path`; returns (exit status, parsed JSON, stderr)."""
        proc = subprocess.run([BENCH, "--path", path, "--duration", "0.3", "--warmup", "0.1", "--json", *args],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_BOUND, text=True)
        try:
            result = json.loads(proc.stdout)
        except json.JSONDecodeError:
            self.fail(f"unixgram-bench printed no JSON (exit {proc.returncode}); stdout {proc.stdout!r}; "
                      f"stderr {proc.stderr!r}")
        return proc.returncode, result, proc.stderr

    def assert_clean(self, status, result, stderr):
        self.assertEqual(status, 0, f"unixgram-bench failed against a correct echo: {stderr!r}")
        self.assertTrue(result["ok"], result)
        for key in ("errors", "wrong_length", "wrong_content", "out_of_order", "lost"):
            self.assertEqual(result[key], 0, f"{key} against a correct echo: {result}")
        self.assertGreater(result["received"], 0, result)
        self.assertGreaterEqual(result["sent"], result["received"], result)
        self.assertGreater(result["latency_us"]["samples"], 0, result)
        self.assertGreater(result["load_cpu_s"], 0.0, "the load's own CPU time must be measured")

    def test_a_verified_load_against_unixgram_echo_passes_and_measures_the_server(self):
        server = self.start()
        status, result, stderr = self.run_bench(server.address, "--clients", "8", "--window", "4",
                                                "--server-pid", str(server.pid))
        self.assert_clean(status, result, stderr)
        self.assertFalse(result["connect"])
        self.assertEqual(result["server_pid"], server.pid)
        self.assertGreater(result["server_cpu_ns_per_datagram"], 0.0, result)
        self.assertIn("8 clients x 4 in flight", stderr)
        self.assert_serving(server)

    def test_connected_clients_one_in_flight_pass_against_unixgram_echo(self):
        # --connect, as the benchmark's 1000 × 1 case uses it: sends name no address, replies still reach
        # each client (the server answers its autobound name), every reply is checked.
        server = self.start()
        status, result, stderr = self.run_bench(server.address, "--clients", "200", "--window", "1", "--connect")
        self.assert_clean(status, result, stderr)
        self.assertTrue(result["connect"])
        self.assertIn("200 connected clients x 1 in flight", stderr)
        self.assert_serving(server)

    def test_connect_to_a_path_with_no_server_names_the_path(self):
        path = self.tmp("nobody.sock")
        proc = subprocess.run([BENCH, "--path", path, "--connect", "--duration", "0.1"], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=RUN_BOUND, text=True)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn(f"connect (client 0) to '{path}'", proc.stderr)

    def spoiled_run(self, fault, *args):
        echo = FaultyEcho(self.tmp("faulty.sock"), fault)
        self.addCleanup(echo.stop)
        status, result, stderr = self.run_bench(self.tmp("faulty.sock"), "--clients", "1", "--window", "4", *args)
        self.assertTrue(echo.spoiled, "the faulty echo never got its third datagram")
        self.assertEqual(status, 1, f"unixgram-bench must fail on a '{fault}' reply; stderr {stderr!r}")
        self.assertFalse(result["ok"], result)
        return result

    def assert_only(self, result, key):
        for other in ("wrong_length", "wrong_content", "out_of_order", "lost"):
            self.assertEqual(result[other], 1 if other == key else 0, f"{other}: {result}")

    def test_an_altered_byte_is_wrong_content(self):
        self.assert_only(self.spoiled_run("alter"), "wrong_content")

    def test_a_truncated_reply_is_a_wrong_length(self):
        self.assert_only(self.spoiled_run("truncate"), "wrong_length")

    def test_two_replies_swapped_are_out_of_order(self):
        self.assert_only(self.spoiled_run("swap"), "out_of_order")

    def test_a_missing_reply_is_lost(self):
        self.assert_only(self.spoiled_run("drop"), "lost")

    def test_a_connected_client_is_checked_as_strictly(self):
        self.assert_only(self.spoiled_run("alter", "--connect"), "wrong_content")


if __name__ == "__main__":
    if not BENCH or not os.access(BENCH, os.X_OK):
        print(f"bench_tool.py: UNIXGRAM_BENCH must name the unixgram-bench executable (got {BENCH!r})",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv, sys.modules[__name__]))
