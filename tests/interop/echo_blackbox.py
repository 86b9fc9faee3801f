#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Black-box tests of the unixgram-echo demo: its command line, its socket file and its echoes, through real sockets.
"""Black-box suite for `unixgram-echo`, run from outside through real AF_UNIX datagram sockets.

Usage:
    python3 echo_blackbox.py --echo /path/to/unixgram-echo [--shards N] [unittest arguments, e.g. -v or a test name]

Every test starts its own server in a private temporary directory and always stops and reaps it. Nothing
waits by sleeping: a test waits for an event (a reply, the ready line, a log line, process exit) or polls
a condition against a deadline. The deadlines are failure guards, far above what a healthy server needs;
the only tight bound is the one the specification states (a signal stops the server within one second).

The environment has net.unix.max_dgram_qlen = 10, so every client keeps a small window of datagrams in
flight and reads replies while it sends.
"""

import array
import os
import re
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

ECHO = os.environ.get("UNIXGRAM_ECHO")
SHARDS = None  # --shards N: every server these tests start (that names no --shards itself) runs N shards

READY_TIMEOUT = 10.0   # the ready line must come within this
IO_TIMEOUT = 5.0       # guard on any single blocking socket operation
STOP_BOUND = 1.0       # the specification: SIGINT/SIGTERM stop the server within a second
FAIL_BOUND = 5.0       # a bad command line must end the process within this
MAX_DATAGRAM = 65536

# A pattern to cut payload bodies from, so that a byte moved or altered anywhere shows up.
PATTERN = bytes((i * 131 + 7) % 251 for i in range(MAX_DATAGRAM + 1024))


# ---------------------------------------------------------------------------------------------- helpers

def token():
    return os.urandom(6).hex()


def abstract_name():
    """A fresh '@name' for this process and test, so that parallel runs never collide."""
    return f"@unixgram-test-{os.getpid()}-{token()}"


def to_sockaddr(address):
    """The server's printed address ('/path' or '@name') as Python's socket module wants it."""
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    return address


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def unix_socket_names():
    """Every bound AF_UNIX name the kernel lists (abstract ones as '@name')."""
    names = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8:
                names.add(parts[7])
    return names


def wait_until(predicate, timeout, interval=0.005):
    """Polls `predicate` until it is true or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        select.select([], [], [], interval)  # a poll interval, not a synchronisation


def payload(client, seq, size=None):
    """Datagram `seq` of client `client`: the sequence number in the first 8 bytes, then a tag and a body
    whose length and content depend on both, so that a reply delivered to the wrong client or out of
    order, truncated or altered never matches."""
    head = struct.pack("<QI", seq, client)
    if size is None:
        size = 12 + (seq * 37 + client * 11) % 180
    start = (seq * 7 + client) % 512
    data = head + PATTERN[start:start + size - len(head)]
    assert len(data) == size
    return data


def snapshot(path):
    """What must stay untouched about an existing path: inode, type and contents."""
    st = os.lstat(path)
    shot = {"dev": st.st_dev, "ino": st.st_ino, "mode": st.st_mode, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "nlink": st.st_nlink}
    if stat.S_ISLNK(st.st_mode):
        shot["target"] = os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            shot["content"] = f.read()
    elif stat.S_ISDIR(st.st_mode):
        shot["listing"] = sorted(os.listdir(path))
    return shot


class EchoProcess:
    """One unixgram-echo process: its ready line, its stdout after that line, its stderr as it comes."""

    def __init__(self, args, umask=None, cwd=None):
        self.args = [ECHO] + list(args)
        if SHARDS is not None and "--shards" not in self.args:
            self.args += ["--shards", SHARDS]
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, umask=-1 if umask is None else umask, start_new_session=True)
        self.address = None
        self._cond = threading.Condition()
        self._stderr = bytearray()
        self._stdout_after_ready = bytearray()
        self._readers = [threading.Thread(target=self._drain, args=(self.proc.stderr, self._stderr),
                                          daemon=True)]
        self._readers[0].start()

    @property
    def pid(self):
        return self.proc.pid

    def _drain(self, pipe, sink):
        fd = pipe.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._cond.notify_all()
                    return
                sink.extend(chunk)
                self._cond.notify_all()

    def stderr_text(self):
        with self._cond:
            return self._stderr.decode(errors="replace")

    def stdout_after_ready(self):
        with self._cond:
            return bytes(self._stdout_after_ready)

    def wait_stderr(self, predicate, timeout):
        """Waits until predicate(stderr text) holds; returns whether it did."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate(self._stderr.decode(errors="replace")):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    def wait_ready(self):
        """Reads the ready line (bounded wait) and returns the printed address."""
        fd = self.proc.stdout.fileno()
        line = bytearray()
        deadline = time.monotonic() + READY_TIMEOUT
        while b"\n" not in line:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no ready line within {READY_TIMEOUT:.0f} s from {self.args!r}; "
                                     f"stdout so far {bytes(line)!r}; stderr: {self.stderr_text()!r}")
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                self.proc.wait(timeout=IO_TIMEOUT)
                raise AssertionError(f"{self.args!r} exited with status {self.proc.returncode} before its "
                                     f"ready line; stdout {bytes(line)!r}; stderr: {self.stderr_text()!r}")
            line.extend(chunk)
        first, _, rest = bytes(line).partition(b"\n")
        self._stdout_after_ready.extend(rest)
        reader = threading.Thread(target=self._drain, args=(self.proc.stdout, self._stdout_after_ready),
                                  daemon=True)
        reader.start()
        self._readers.append(reader)
        text = first.decode(errors="replace")
        match = re.fullmatch(r"listening on (.*)", text)
        if not match:
            raise AssertionError(f"ready line {text!r} is not 'listening on <address>'")
        self.address = match.group(1)
        return self.address

    def signal_and_wait(self, signum, bound):
        """Sends `signum` and waits (at most `bound` + a margin) for exit; returns (status, seconds)."""
        start = time.monotonic()
        self.proc.send_signal(signum)
        try:
            self.proc.wait(timeout=bound + 4.0)
        except subprocess.TimeoutExpired:
            pass
        return self.proc.returncode, time.monotonic() - start

    def close(self):
        """Stops the process whatever its state (terminate, then kill after a bound) and reaps it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=2.0)
        self.proc.stdout.close()
        self.proc.stderr.close()


# ---------------------------------------------------------------------------------------------- base case

class EchoCase(unittest.TestCase):
    """Gives each test a private directory, and cleans up every process and socket it made."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="unixgram-echo-")
        self.servers = []
        self.children = []
        self.sockets = []
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait()
        for server in self.servers:
            server.close()
        for sock in self.sockets:
            sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def tmp(self, name):
        return os.path.join(self.dir, name)

    def start(self, *args, path=None, umask=None):
        """Starts a server on `path` (default: a fresh pathname in the test's directory) and waits until it
        is ready. Sets server.sockaddr for clients."""
        if path is None:
            path = self.tmp("echo.sock")
        server = EchoProcess(["--path", path] + list(args), umask=umask, cwd=self.dir)
        self.servers.append(server)
        server.wait_ready()
        server.sockaddr = to_sockaddr(server.address)
        return server

    def client(self, bind="path", connect=None, windowed=False):
        """A client socket bound to a fresh pathname ('path'), a fresh abstract name ('abstract'), a
        kernel-chosen name ('auto') or unbound (None), optionally connected to `connect`.

        A windowed client (for windowed_exchange) is in blocking mode with kernel send and receive
        timeouts: a send waits while the server's queue is full, as a real client's would, and a
        receive with MSG_DONTWAIT never waits."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sockets.append(sock)
        if bind == "path":
            sock.bind(self.tmp(f"c-{token()}.sock"))
        elif bind == "abstract":
            sock.bind(to_sockaddr(abstract_name()))
        elif bind == "auto":
            sock.bind("")
        if connect is not None:
            sock.connect(connect)
        if windowed:
            sock.setblocking(True)
            guard = struct.pack("ll", int(IO_TIMEOUT), 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, guard)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, guard)
        else:
            sock.settimeout(IO_TIMEOUT)
        return sock

    def send_unread(self, server, sock, datagrams, who):
        """Sends `datagrams` from `sock` without reading any reply (blocking, with a guard)."""
        for seq, data in enumerate(datagrams):
            try:
                sock.sendto(data, server.sockaddr)
            except (socket.timeout, BlockingIOError):
                self.fail(f"{who}: datagram {seq} not taken within {IO_TIMEOUT:.0f} s: the server stopped "
                          f"reading while replies to this client were stuck; stderr: "
                          f"{server.stderr_text()[-2000:]!r}")

    def recv_reply(self, sock, what="reply"):
        try:
            return sock.recv(MAX_DATAGRAM + 1)
        except socket.timeout:
            self.fail(f"no {what} within {IO_TIMEOUT:.0f} s")

    def assert_echo(self, server, sock, data):
        sock.sendto(data, server.sockaddr)
        reply = self.recv_reply(sock)
        self.assertEqual(len(reply), len(data), "echo changed the datagram's length")
        self.assertEqual(reply, data, "echo changed the datagram's content")

    def assert_serving(self, server, bind="path"):
        """The server is alive and answers a fresh client."""
        self.assertIsNone(server.proc.poll(), f"server exited; stderr: {server.stderr_text()!r}")
        sock = self.client(bind)
        self.assert_echo(server, sock, b"still serving " + token().encode())

    def windowed_exchange(self, server, clients, count, window, reply_timeout=IO_TIMEOUT):
        """Each client (made with windowed=True) sends `count` datagrams to the server, keeping at most
        `window` in flight, and checks that every reply is exactly its next datagram: content, length,
        and order. Returns the longest wait for any reply, in seconds."""
        poller = select.poll()
        state = {}
        for index, sock in enumerate(clients):
            state[sock.fileno()] = {"sock": sock, "index": index, "sent": 0, "received": 0}
            poller.register(sock, select.POLLIN)
        slowest = 0.0
        last_progress = time.monotonic()

        def pump(st):
            while st["sent"] < count and st["sent"] - st["received"] < window:
                try:
                    st["sock"].sendto(payload(st["index"], st["sent"]), server.sockaddr)
                except BlockingIOError:
                    self.fail(f"client {st['index']}: the server's queue stayed full for {IO_TIMEOUT:.0f} s; "
                              f"server stderr: {server.stderr_text()[-2000:]!r}")
                st["sent"] += 1

        for st in state.values():
            pump(st)
        remaining = len(state)
        while remaining:
            events = poller.poll(reply_timeout * 1000)
            now = time.monotonic()
            if not events:
                progress = {st["index"]: (st["sent"], st["received"]) for st in state.values()
                            if st["received"] < count}
                self.fail(f"no reply within {reply_timeout:.1f} s; (sent, received) of unfinished clients: "
                          f"{progress}; server stderr: {server.stderr_text()[-2000:]!r}")
            slowest = max(slowest, now - last_progress)
            last_progress = now
            for fd, _ in events:
                st = state[fd]
                while st["received"] < st["sent"]:
                    try:
                        reply = st["sock"].recv(MAX_DATAGRAM + 1, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    expected = payload(st["index"], st["received"])
                    if reply != expected:
                        got = struct.unpack_from("<QI", reply)[::-1] if len(reply) >= 12 else None
                        self.fail(f"client {st['index']}: reply {st['received']} is wrong: "
                                  f"{len(reply)} bytes, (client, seq) {got}; expected {len(expected)} bytes "
                                  f"(client, seq) {(st['index'], st['received'])}")
                    st["received"] += 1
                if st["received"] == count:
                    poller.unregister(fd)
                    remaining -= 1
                else:
                    pump(st)
        return slowest

    def run_failing(self, args):
        """Runs the binary with a command line that must fail; returns (status, stdout, stderr, seconds)."""
        start = time.monotonic()
        proc = subprocess.Popen([ECHO] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=self.dir, start_new_session=True)
        self.children.append(proc)
        try:
            out, err = proc.communicate(timeout=FAIL_BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            self.fail(f"{args!r} still running after {FAIL_BOUND:.0f} s; stdout {out!r}; stderr {err!r}")
        return proc.returncode, out, err.decode(errors="replace"), time.monotonic() - start

    def assert_rejected(self, args, names):
        """`args` ends the process with a non-zero status, one stderr line naming one of `names`, no ready
        line, and nothing created in the test's directory."""
        before = sorted(os.listdir(self.dir))
        status, out, err, seconds = self.run_failing(args)
        self.assertNotEqual(status, 0, f"{args!r} exited 0; stderr {err!r}")
        self.assertLess(seconds, FAIL_BOUND)
        self.assertEqual(out, b"", f"{args!r} printed on stdout")
        lines = [line for line in err.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, f"{args!r}: expected one line on stderr, got {err!r}")
        self.assertTrue(any(name in lines[0] for name in names),
                        f"{args!r}: the error {lines[0]!r} does not name {names!r}")
        self.assertEqual(sorted(os.listdir(self.dir)), before, f"{args!r} created something")
        return lines[0]


# ---------------------------------------------------------------------------------------------- addresses

class AddressTest(EchoCase):
    def test_pathname_prints_ready_line_creates_socket_and_echoes(self):
        path = self.tmp("echo.sock")
        server = self.start(path=path)
        self.assertEqual(server.address, path)
        self.assertTrue(stat.S_ISSOCK(os.lstat(path).st_mode), "the path is not a socket")
        self.assert_echo(server, self.client("path"), b"hello pathname")
        self.assert_echo(server, self.client("abstract"), b"hello from an abstract client")
        self.assert_echo(server, self.client("auto"), b"hello from an autobound client")

    def test_abstract_name_binds_in_abstract_namespace_and_creates_no_file(self):
        name = abstract_name()
        server = self.start(path=name)
        self.assertEqual(server.address, name)
        self.assertIn(name, unix_socket_names())
        self.assertEqual(os.listdir(self.dir), [], "an abstract server created a file")
        self.assert_echo(server, self.client("path"), b"hello abstract")

    def test_empty_path_autobinds_to_five_hex_digits(self):
        server = self.start(path="")
        self.assertRegex(server.address, r"^@[0-9a-f]{5}$")
        self.assertIn(server.address, unix_socket_names())
        self.assertEqual(os.listdir(self.dir), [], "an autobound server created a file")
        self.assert_echo(server, self.client("path"), b"hello autobind")

    def test_pathname_of_107_bytes_is_accepted(self):
        stem = self.tmp("")
        path = stem + "p" * (107 - len(stem.encode()))
        self.assertEqual(len(path.encode()), 107)
        server = self.start(path=path)
        self.assertEqual(server.address, path)
        self.assert_echo(server, self.client("path"), b"longest path")

    def test_shards_and_log_level_options_are_accepted(self):
        server = self.start("--shards", "2", "--log-level", "debug")
        self.assert_echo(server, self.client("path"), b"with options")


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


# ---------------------------------------------------------------------------------------------- socket file mode

class ModeTest(EchoCase):
    def test_mode_sets_exact_permission_bits_whatever_the_umask(self):
        for mode, umask in [(0o660, 0o077), (0o660, 0o000), (0o666, 0o077), (0o600, 0o000), (0o640, 0o022)]:
            with self.subTest(mode=oct(mode), umask=oct(umask)):
                path = self.tmp(f"m{mode:o}-u{umask:o}.sock")
                server = self.start("--mode", f"0{mode:o}", path=path, umask=umask)
                st = os.lstat(path)
                self.assertTrue(stat.S_ISSOCK(st.st_mode))
                self.assertEqual(oct(stat.S_IMODE(st.st_mode)), oct(mode))
                self.assert_echo(server, self.client("path"), b"mode")
                server.close()


# ---------------------------------------------------------------------------------------------- existing paths

class ExistingPathTest(EchoCase):
    """Binding never removes or alters what is already at the path, whatever it is."""

    def assert_left_alone(self, path, *, check=None):
        before = snapshot(path)
        listing = sorted(os.listdir(self.dir))
        self.assert_rejected(["--path", path], [path])
        self.assertEqual(snapshot(path), before, "the existing path was altered")
        self.assertEqual(sorted(os.listdir(self.dir)), listing)
        if check is not None:
            check()

    def test_regular_file_is_left_untouched(self):
        path = self.tmp("file")
        with open(path, "wb") as f:
            f.write(b"precious contents\n")
        self.assert_left_alone(path)

    def test_empty_regular_file_is_left_untouched(self):
        path = self.tmp("empty")
        open(path, "wb").close()
        self.assert_left_alone(path)

    def test_directory_is_left_untouched(self):
        path = self.tmp("dir")
        os.mkdir(path)
        with open(os.path.join(path, "inside"), "w") as f:
            f.write("x")
        self.assert_left_alone(path)

    def test_symlink_to_file_is_left_untouched(self):
        target = self.tmp("target")
        with open(target, "w") as f:
            f.write("target contents")
        path = self.tmp("link")
        os.symlink(target, path)
        self.assert_left_alone(path)
        with open(target) as f:
            self.assertEqual(f.read(), "target contents")

    def test_dangling_symlink_is_left_untouched(self):
        path = self.tmp("dangling")
        os.symlink(self.tmp("nowhere.sock"), path)
        self.assert_left_alone(path)
        self.assertFalse(os.path.lexists(self.tmp("nowhere.sock")), "the symlink's target was created")

    def test_fifo_is_left_untouched(self):
        path = self.tmp("fifo")
        os.mkfifo(path)
        self.assert_left_alone(path)

    def test_live_socket_is_left_untouched_and_keeps_working(self):
        path = self.tmp("live.sock")
        owner = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sockets.append(owner)
        owner.bind(path)
        owner.settimeout(IO_TIMEOUT)

        def still_receives():
            probe = self.client("path")
            probe.sendto(b"still mine", path)
            self.assertEqual(owner.recv(100), b"still mine")

        self.assert_left_alone(path, check=still_receives)

    def test_stale_socket_is_left_untouched(self):
        path = self.tmp("stale.sock")
        old = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        old.bind(path)
        old.close()
        self.assert_left_alone(path)


# ---------------------------------------------------------------------------------------------- bad arguments

class BadArgumentTest(EchoCase):
    def test_bad_octal_mode_is_rejected(self):
        for value in ["0999", "rw-rw----", "0o660x", "-1", "7777777"]:
            with self.subTest(mode=value):
                self.assert_rejected(["--path", self.tmp("m.sock"), "--mode", value], [value])

    def test_unknown_unnamed_policy_is_rejected(self):
        for value in ["bogus", "IGNORE", ""]:
            with self.subTest(unnamed=value):
                names = [value] if value else ["--unnamed", "unnamed"]
                self.assert_rejected(["--path", self.tmp("u.sock"), "--unnamed", value], names)

    def test_mode_with_abstract_address_is_rejected(self):
        name = abstract_name()
        self.assert_rejected(["--path", name, "--mode", "0660"], ["0660", name])
        self.assertNotIn(name, unix_socket_names(), "the abstract name was bound")

    def test_mode_with_autobind_is_rejected(self):
        self.assert_rejected(["--path", "", "--mode", "0660"], ["0660"])

    def test_pathname_over_107_bytes_is_rejected(self):
        stem = self.tmp("")
        path = stem + "q" * (108 - len(stem.encode()))
        self.assertEqual(len(path.encode()), 108)
        self.assert_rejected(["--path", path], [path])
        self.assertFalse(os.path.lexists(path[:107]), "a truncated path was created")

    def test_abstract_name_over_107_bytes_is_rejected(self):
        name = "@" + ("a" * 100 + token())[:108]
        self.assertEqual(len(name) - 1, 108)
        self.assert_rejected(["--path", name], [name, name[1:]])
        self.assertFalse(any(n.startswith(name[:100]) for n in unix_socket_names()), "a truncated name was bound")


# ---------------------------------------------------------------------------------------------- signals and socket file

class StopTest(EchoCase):
    def assert_graceful_stop(self, server, signum, path=None):
        status, seconds = server.signal_and_wait(signum, STOP_BOUND)
        self.assertIsNotNone(status, f"still running {seconds:.2f} s after {signal.Signals(signum).name}")
        self.assertEqual(status, 0, f"exit status after {signal.Signals(signum).name}; stderr "
                                    f"{server.stderr_text()[-2000:]!r}")
        self.assertLess(seconds, STOP_BOUND, f"took {seconds:.3f} s to stop after {signal.Signals(signum).name}")
        server.close()
        self.assertEqual(server.stdout_after_ready(), b"", "printed more than the ready line on stdout")
        if path is not None:
            self.assertFalse(os.path.lexists(path), "the socket file was not removed")

    def test_sigterm_exits_0_within_a_second_and_removes_socket_file(self):
        path = self.tmp("echo.sock")
        server = self.start(path=path)
        self.assert_echo(server, self.client("path"), b"before SIGTERM")
        self.assert_graceful_stop(server, signal.SIGTERM, path)

    def test_sigint_exits_0_within_a_second_and_removes_socket_file(self):
        path = self.tmp("echo.sock")
        server = self.start(path=path)
        self.assert_echo(server, self.client("path"), b"before SIGINT")
        self.assert_graceful_stop(server, signal.SIGINT, path)

    def test_signal_stops_abstract_server(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=signum.name):
                name = abstract_name()
                server = self.start(path=name)
                self.assert_echo(server, self.client("path"), b"abstract")
                self.assert_graceful_stop(server, signum)
                self.assertNotIn(name, unix_socket_names())

    def fill_stuck_peer(self, server):
        """A client that never reads: its queue fills and replies to it stay stuck in the server."""
        stuck = self.client("path")
        self.send_unread(server, stuck, [payload(9, seq) for seq in range(40)], "a client that never reads")
        # The server reads its queue in order, so this echo proves it has read all 40.
        self.assert_echo(server, self.client("path"), b"barrier")
        return stuck

    def test_signal_stops_server_while_replies_are_stuck_on_full_peers(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=signum.name):
                path = self.tmp(f"stuck-{signum.name}.sock")
                server = self.start(path=path)
                self.fill_stuck_peer(server)
                self.fill_stuck_peer(server)
                self.assert_graceful_stop(server, signum, path)

    def test_replaced_socket_file_is_left_alone(self):
        path = self.tmp("echo.sock")
        server = self.start(path=path)
        os.unlink(path)
        with open(path, "wb") as f:
            f.write(b"someone else's file\n")
        before = snapshot(path)
        self.assert_graceful_stop(server, signal.SIGTERM)
        self.assertTrue(os.path.lexists(path), "the server removed the file that replaced its socket")
        self.assertEqual(snapshot(path), before, "the replacing file was altered")

    def test_socket_file_replaced_by_another_socket_is_left_alone(self):
        path = self.tmp("echo.sock")
        server = self.start(path=path)
        os.unlink(path)
        other = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sockets.append(other)
        other.bind(path)
        other.settimeout(IO_TIMEOUT)
        before = snapshot(path)
        self.assert_graceful_stop(server, signal.SIGTERM)
        self.assertTrue(os.path.lexists(path), "the server removed the socket that replaced its own")
        self.assertEqual(snapshot(path), before, "the replacing socket was altered")
        self.client("path").sendto(b"to the new owner", path)
        self.assertEqual(other.recv(100), b"to the new owner")

    def test_removed_socket_file_still_exits_0(self):
        path = self.tmp("echo.sock")
        server = self.start(path=path)
        os.unlink(path)
        self.assert_graceful_stop(server, signal.SIGTERM, path)


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


# ---------------------------------------------------------------------------------------------- main

def main(argv):
    global ECHO, SHARDS
    rest = [argv[0]]
    args = iter(argv[1:])
    for arg in args:
        if arg == "--shards":
            SHARDS = next(args, None)
        elif arg == "--echo":
            ECHO = next(args, None)
        elif arg.startswith("--echo="):
            ECHO = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if not ECHO:
        print("usage: echo_blackbox.py --echo /path/to/unixgram-echo [unittest arguments]", file=sys.stderr)
        return 2
    ECHO = os.path.abspath(ECHO)
    if not os.access(ECHO, os.X_OK):
        print(f"echo_blackbox.py: {ECHO} is not an executable", file=sys.stderr)
        return 2
    program = unittest.main(module=__name__, argv=rest, exit=False)
    return 0 if program.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
