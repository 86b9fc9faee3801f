# SPDX-License-Identifier: MIT
# The harness the unixgram-echo black-box suites share: a server process, a test case base, helpers, main().
"""Shared harness of the black-box suites for `unixgram-echo`, run from outside through real AF_UNIX datagram
sockets. Each suite is a file beside this one, run as:

    python3 <suite>.py --echo /path/to/unixgram-echo [--shards N] [unittest arguments, e.g. -v or a test name]

Every test starts its own server in a private temporary directory and always stops and reaps it. Nothing
waits by sleeping: a test waits for an event (a reply, the ready line, a log line, process exit) or polls
a condition against a deadline. The deadlines are failure guards, far above what a healthy server needs;
the only tight bound is the one the specification states (a signal stops the server within one second).

The environment has net.unix.max_dgram_qlen = 10, so every client keeps a small window of datagrams in
flight and reads replies while it sends.
"""

import os
import re
import select
import shutil
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
                self._drain_to_end()
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
            return None, time.monotonic() - start
        seconds = time.monotonic() - start
        self._drain_to_end()
        return self.proc.returncode, seconds

    def _drain_to_end(self):
        """After exit: waits (bounded) until the readers have taken the pipes' last bytes, so that what the
        process wrote just before it ended (its exit line) is in stderr_text(). Exit is not enough: the
        reader threads may not have run since."""
        for reader in self._readers:
            reader.join(timeout=IO_TIMEOUT)
            if reader.is_alive():
                raise AssertionError(f"{self.args!r} exited but its output pipe stayed open for {IO_TIMEOUT:.0f} s")

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


# ---------------------------------------------------------------------------------------------- main

class _OwnCasesLoader(unittest.TestLoader):
    """Loads only the test cases the suite file itself defines: the ones it imports (EchoCase) are not its tests."""

    def loadTestsFromModule(self, module, *args, pattern=None):
        cases = [obj for obj in (getattr(module, name) for name in dir(module))
                 if isinstance(obj, type) and issubclass(obj, unittest.TestCase)
                 and obj.__module__ == module.__name__]
        return self.suiteClass(self.loadTestsFromTestCase(case) for case in cases)


def main(argv, module):
    """Takes --echo PATH and --shards N out of `argv` and runs the test cases `module` (the calling suite)
    defines, with the rest of `argv` as unittest's arguments. Returns the exit status."""
    global ECHO, SHARDS
    program_name = os.path.basename(argv[0])
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
        print(f"usage: {program_name} --echo /path/to/unixgram-echo [--shards N] [unittest arguments]",
              file=sys.stderr)
        return 2
    ECHO = os.path.abspath(ECHO)
    if not os.access(ECHO, os.X_OK):
        print(f"{program_name}: {ECHO} is not an executable", file=sys.stderr)
        return 2
    program = unittest.main(module=module, argv=rest, exit=False, testLoader=_OwnCasesLoader())
    return 0 if program.result.wasSuccessful() else 1
