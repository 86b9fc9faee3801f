#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Black-box tests of unixgram-echo's echoes: payloads, order under load, slow readers, resources, other senders.

import array
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

from echo_harness import (IO_TIMEOUT, MAX_DATAGRAM, PATTERN, STOP_BOUND, token, abstract_name, to_sockaddr, fd_count, rss_kib,
                          wait_until, payload, EchoCase, main)


# ---------------------------------------------------------------------------------------------- payloads

class PayloadTest(EchoCase):
    SIZES = [0, 1, MAX_DATAGRAM, 0, MAX_DATAGRAM - 1, 2, MAX_DATAGRAM, 0]

    def test_empty_and_64k_datagrams_echo_unchanged(self):
        server = self.start()
        sock = self.client("path")
        for n, size in enumerate(self.SIZES):
            with self.subTest(size=size):
                self.assert_echo(server, sock, payload(1, n, size) if size >= 12 else PATTERN[:size])

    def test_empty_and_64k_datagrams_keep_their_order_in_a_window(self):
        server = self.start()
        sock = self.client("abstract")
        sent = [payload(2, n, size) if size >= 12 else PATTERN[n:n + size] for n, size in enumerate(self.SIZES)]
        # Two windows of four stay under the queue limit (10) and a client's send buffer (~3 x 64 KiB).
        for first in range(0, len(sent), 4):
            batch = sent[first:first + 4]
            for data in batch:
                sock.sendto(data, server.sockaddr)
            for n, data in enumerate(batch):
                reply = self.recv_reply(sock, f"reply {first + n}")
                self.assertEqual(len(reply), len(data), f"reply {first + n} has the wrong length")
                self.assertTrue(reply == data, f"reply {first + n} has the wrong content")


# ---------------------------------------------------------------------------------------------- ordering under load

class LoadOrderTest(EchoCase):
    CLIENTS = 32
    COUNT = 2000
    WINDOW = 4

    def test_many_clients_get_every_reply_unaltered_and_in_order(self):
        server = self.start()
        kinds = ["path", "abstract", "auto"]
        # Half the clients connect to the server; a connected peer's queue limit works differently in the
        # kernel (the server's replies to it are never refused), so both kinds are worth covering.
        clients = [self.client(kinds[i % 3], connect=server.sockaddr if i % 2 else None, windowed=True)
                   for i in range(self.CLIENTS)]
        self.windowed_exchange(server, clients, self.COUNT, self.WINDOW)
        self.assert_serving(server)

    def test_replies_beyond_a_full_client_queue_stay_in_order(self):
        # A window of 24 overflows each client's queue (10): the server's replies are refused (EAGAIN)
        # and it must hold the surplus and deliver it, in order, as the client reads. (Unconnected clients:
        # the kernel never refuses replies to a client connected to the server.)
        server = self.start()
        clients = [self.client(["path", "abstract", "auto"][i], windowed=True) for i in range(3)]
        self.windowed_exchange(server, clients, 300, 24)
        self.assert_serving(server)


    def test_a_small_total_queue_cap_pushes_back_on_senders_and_loses_nothing(self):
        # --max-total-queued-bytes 256 (four 64-byte datagrams for all clients): the server stops reading at
        # the cap (DESIGN §6: kernel backpressure, senders wait) and resumes at half. 8 clients × 8 in flight
        # × 64 B is 4 KiB in flight: every reply must still come back, in order, with nothing dropped, and the
        # server's exit line must count the pauses. --batch-all-replies keeps each client's window queued in the
        # server (by default a reply that holds up its client's next datagram leaves at once, and an echo then
        # queues almost nothing); the exit line must then count no early reply.
        server = self.start("--max-total-queued-bytes", "256", "--log-level", "info", "--batch-all-replies")
        clients = [self.client(["path", "abstract", "auto"][i % 3], windowed=True) for i in range(8)]
        self.windowed_exchange(server, clients, 400, 8)
        self.assert_serving(server)
        status, _ = server.signal_and_wait(signal.SIGTERM, STOP_BOUND)
        self.assertEqual(status, 0, f"exit status; stderr {server.stderr_text()[-2000:]!r}")
        served = re.search(r"served: (\d+) datagrams received, (\d+) replies sent, \d+ send retries .*?, "
                           r"\d+ send errors, (\d+) dropped, (\d+) receive pauses, (\d+) replies sent early, "
                           r"\d+ receive-buffer shortages \(io_uring ENOBUFS\), (\d+) failed reads",
                           server.stderr_text())
        self.assertIsNotNone(served, f"no 'served:' line at exit: {server.stderr_text()[-2000:]!r}")
        received, sent, dropped, pauses, early, failed_reads = (int(v) for v in served.groups())
        self.assertEqual(failed_reads, 0, "pausing and resuming the receive is not a failed read")
        self.assertEqual(early, 0, "--batch-all-replies: no reply may leave ahead of its turn's batch")
        self.assertEqual(dropped, 0, "datagrams were dropped under the cap")
        self.assertEqual(received, sent, "every datagram received must have been answered")
        self.assertGreaterEqual(received, 8 * 400)
        self.assertGreater(pauses, 0, "a 256-byte cap with 4 KiB in flight must pause the receive")


# ---------------------------------------------------------------------------------------------- slow readers

class SlowReaderTest(EchoCase):
    SLOW_COUNT = 64
    OTHERS = 8
    OTHER_COUNT = 300
    # A reply to the other clients must come well before the server could give up on the slow reader
    # (its send timeout is 5 s), so a server that waits on the slow reader fails here.
    OTHER_REPLY_BOUND = 2.0

    def test_slow_reader_delays_nobody_and_later_reads_everything_in_order(self):
        server = self.start()
        slow = self.client("path")
        sent = [payload(99, seq) for seq in range(self.SLOW_COUNT)]
        self.send_unread(server, slow, sent, "the slow reader")
        others = [self.client("path" if i % 2 else "abstract", windowed=True) for i in range(self.OTHERS)]
        slowest = self.windowed_exchange(server, others, self.OTHER_COUNT, 4, reply_timeout=self.OTHER_REPLY_BOUND)
        self.assertLess(slowest, self.OTHER_REPLY_BOUND)
        for seq, data in enumerate(sent):
            reply = self.recv_reply(slow, f"slow reader's reply {seq}")
            if reply != data:
                got = struct.unpack_from("<Q", reply)[0] if len(reply) >= 8 else None
                self.fail(f"slow reader's reply {seq} is wrong ({len(reply)} bytes, seq {got})")
        self.assert_serving(server)


    def test_stuck_replies_resume_with_no_other_traffic(self):
        # Nothing but the reader draining its queue may wake the server here: its retries of refused
        # replies must be driven by its own timers, not by other clients' datagrams.
        server = self.start()
        reader = self.client("path")
        sent = [payload(98, seq) for seq in range(self.SLOW_COUNT)]
        self.send_unread(server, reader, sent, "the paused reader")
        for seq, data in enumerate(sent):
            reply = self.recv_reply(reader, f"paused reader's reply {seq} (of {len(sent)})")
            self.assertTrue(reply == data, f"paused reader's reply {seq} is wrong ({len(reply)} bytes)")
        self.assert_serving(server)


# ---------------------------------------------------------------------------------------------- resources

class ResourceTest(EchoCase):
    WARMUP = 500
    CLIENTS = 3000
    RSS_GROWTH_KIB = 8 * 1024

    def short_lived_clients(self, server, count, offset):
        for i in range(count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.settimeout(IO_TIMEOUT)
                if i % 4 == 3:
                    path = None
                    sock.bind(to_sockaddr(abstract_name()))
                else:
                    path = self.tmp(f"short-{offset + i}.sock")
                    sock.bind(path)
                data = payload(offset + i, 0)
                sock.sendto(data, server.sockaddr)
                reply = self.recv_reply(sock, f"reply to short-lived client {offset + i}")
                self.assertEqual(reply, data)
            finally:
                sock.close()
                if path is not None:
                    os.unlink(path)

    def test_thousands_of_short_lived_clients_keep_memory_and_fds_flat(self):
        server = self.start()
        self.short_lived_clients(server, self.WARMUP, 0)
        fds_before = fd_count(server.pid)
        rss_before = rss_kib(server.pid)
        self.short_lived_clients(server, self.CLIENTS, self.WARMUP)
        settled = wait_until(lambda: fd_count(server.pid) == fds_before, 5.0)
        self.assertTrue(settled, f"fd count {fds_before} -> {fd_count(server.pid)} after {self.CLIENTS} clients")
        growth = rss_kib(server.pid) - rss_before
        self.assertLess(growth, self.RSS_GROWTH_KIB, f"VmRSS grew by {growth} KiB over {self.CLIENTS} clients")
        self.assert_serving(server)

    def test_fds_passed_in_datagrams_are_closed(self):
        server = self.start()
        sock = self.client("path")
        self.assert_echo(server, sock, b"warm-up")
        fds_before = fd_count(server.pid)
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, read_end)
        null = os.open(os.devnull, os.O_RDONLY)
        extra = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sockets.append(extra)
        try:
            for seq in range(200):
                fds = array.array("i", [write_end, null, extra.fileno()])
                data = payload(5, seq)
                sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())], 0,
                               server.sockaddr)
                reply, ancdata, _, _ = sock.recvmsg(MAX_DATAGRAM + 1, socket.CMSG_SPACE(64 * 4))
                for level, kind, blob in ancdata:  # an echo may hand fds back; ours to close
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        got = array.array("i")
                        got.frombytes(blob[:len(blob) - len(blob) % got.itemsize])
                        for fd in got:
                            os.close(fd)
                self.assertEqual(reply, data, f"reply {seq} differs")
        finally:
            os.close(write_end)
            os.close(null)
        # Our write end is closed: EOF on the read end proves no copy survives in the server.
        readable, _, _ = select.select([read_end], [], [], IO_TIMEOUT)
        self.assertTrue(readable, "the pipe's read end saw no EOF: the server still holds a passed fd")
        self.assertEqual(os.read(read_end, 1), b"", "unexpected data in the pipe")
        settled = wait_until(lambda: fd_count(server.pid) == fds_before, 5.0)
        self.assertTrue(settled, f"server fd count {fds_before} -> {fd_count(server.pid)} after passed fds")
        self.assert_serving(server)

    def test_vanished_peers_do_not_hurt_the_server(self):
        server = self.start()
        self.assert_echo(server, self.client("path"), b"warm-up")
        fds_before = fd_count(server.pid)
        for round_ in range(20):
            # Replies stuck on a full queue, then the peer closes and unlinks its socket.
            gone = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            path = self.tmp(f"gone-{round_}.sock")
            gone.bind(path)
            gone.settimeout(IO_TIMEOUT)
            self.send_unread(server, gone, [payload(round_, seq) for seq in range(30)], "a vanishing client")
            gone.close()
            os.unlink(path)
            # Same, but the socket file stays: replies meet a stale socket (ECONNREFUSED).
            stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            stale.bind(self.tmp(f"stale-{round_}.sock"))
            stale.settimeout(IO_TIMEOUT)
            self.send_unread(server, stale, [payload(round_, seq) for seq in range(30)], "a vanishing client")
            stale.close()
            # An abstract peer closes at once after sending.
            quick = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            quick.bind(to_sockaddr(abstract_name()))
            quick.settimeout(IO_TIMEOUT)
            quick.sendto(b"bye", server.sockaddr)
            quick.close()
            self.assert_serving(server, "path" if round_ % 2 else "abstract")
        others = [self.client("path", windowed=True) for _ in range(4)]
        self.windowed_exchange(server, others, 200, 4)
        settled = wait_until(lambda: fd_count(server.pid) == fds_before, 5.0)
        self.assertTrue(settled, f"server fd count {fds_before} -> {fd_count(server.pid)} after vanished peers")


# ---------------------------------------------------------------------------------------------- unnamed senders

UNNAMED_WORDS = re.compile(r"unbound|unnamed", re.IGNORECASE)


class UnnamedSenderTest(EchoCase):
    def send_unnamed(self, server, count=3):
        sock = self.client(None)
        for n in range(count):
            sock.sendto(b"from nobody %d" % n, server.sockaddr)

    def test_ignore_is_the_default_and_is_silent(self):
        for args in ([], ["--unnamed", "ignore"]):
            with self.subTest(args=args):
                server = self.start(*args, path=self.tmp(f"ignore-{len(args)}.sock"))
                named = self.client("path")
                self.assert_echo(server, named, b"barrier before")
                before = server.stderr_text()
                self.send_unnamed(server)
                # The server reads in order: once this echo is back, it has dealt with the unnamed ones.
                self.assert_echo(server, named, b"barrier after")
                self.assertEqual(server.stderr_text(), before, "--unnamed ignore wrote on stderr")
                server.close()

    def test_warn_logs_that_the_sender_is_unnamed(self):
        server = self.start("--unnamed", "warn")
        named = self.client("path")
        self.assert_echo(server, named, b"barrier before")
        self.assertIsNone(UNNAMED_WORDS.search(server.stderr_text()))
        self.send_unnamed(server)
        found = server.wait_stderr(lambda text: UNNAMED_WORDS.search(text), IO_TIMEOUT)
        self.assertTrue(found, f"no line saying 'unbound' or 'unnamed' on stderr: {server.stderr_text()!r}")
        self.assert_echo(server, named, b"still serving")

    def test_handle_handles_and_logs_the_failed_reply(self):
        server = self.start("--unnamed", "handle")
        named = self.client("path")
        self.assert_echo(server, named, b"barrier before")
        before = server.stderr_text()
        self.send_unnamed(server, 1)
        found = server.wait_stderr(lambda text: len(text) > len(before) and "\n" in text[len(before):],
                                   IO_TIMEOUT)
        self.assertTrue(found, "no log line for the failed reply to an unnamed sender")
        new = server.stderr_text()[len(before):]
        self.assertRegex(new, re.compile(r"reply|send|fail|unnamed|unbound|invalid", re.IGNORECASE),
                         "the log line does not look like a failed reply")
        self.assert_echo(server, named, b"still serving")


# ---------------------------------------------------------------------------------------------- other programs

class InteropTest(EchoCase):
    def need(self, program):
        found = shutil.which(program)
        if found is None:
            reason = f"{program} is not installed; skipping its interoperability check"
            print(reason, file=sys.stderr)
            self.skipTest(reason)
        return found

    def socat_round_trip(self, server, address, text):
        socat = self.need("socat")
        proc = subprocess.Popen([socat, "-t", "5", "-T", "10", "-", address], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.children.append(proc)
        proc.stdin.write(text)
        proc.stdin.flush()
        got = b""
        deadline = time.monotonic() + IO_TIMEOUT
        while not got.endswith(b"\n") and time.monotonic() < deadline:
            readable, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
            if readable:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                got += chunk
        proc.stdin.close()
        try:
            proc.wait(timeout=IO_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err = proc.stderr.read().decode(errors="replace")
        proc.stdout.close()
        proc.stderr.close()
        self.assertEqual(got, text, f"socat got {got!r}; socat stderr {err!r}; server stderr "
                                    f"{server.stderr_text()!r}")

    def test_socat_pathname_round_trip(self):
        self.need("socat")
        server = self.start()
        text = f"hello from socat {token()}\n".encode()
        self.socat_round_trip(server, f"UNIX-SENDTO:{server.address},bind={self.tmp('socat.sock')}", text)
        self.assert_serving(server)

    def test_socat_abstract_round_trip(self):
        self.need("socat")
        server = self.start(path=abstract_name())
        text = f"hello from socat {token()}\n".encode()
        self.socat_round_trip(server, f"ABSTRACT-SENDTO:{server.address[1:]},bind={abstract_name()[1:]}", text)
        self.assert_serving(server)

    def test_logger_datagram_is_taken_and_counted(self):
        logger = self.need("logger")
        server = self.start("--unnamed", "warn")
        message = f"unixgram interop {token()}"
        try:
            done = subprocess.run([logger, "--socket-errors=off", "-u", server.address, "-d", message],
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=IO_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail(f"logger did not finish within {IO_TIMEOUT:.0f} s")
        self.assertEqual(done.returncode, 0, f"logger failed: {done.stderr!r}")
        # logger sends from an unbound socket: the server must have seen it, and says so with --unnamed warn.
        found = server.wait_stderr(lambda text: UNNAMED_WORDS.search(text), IO_TIMEOUT)
        self.assertTrue(found, f"the server did not report logger's datagram: {server.stderr_text()!r}")
        self.assert_serving(server)


if __name__ == "__main__":
    sys.exit(main(sys.argv, sys.modules[__name__]))
