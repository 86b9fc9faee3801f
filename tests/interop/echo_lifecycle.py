#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Black-box tests of unixgram-echo's lifecycle: its command line, its address and socket file, how it stops.

import os
import signal
import socket
import stat
import sys

from echo_harness import (IO_TIMEOUT, STOP_BOUND, token, abstract_name, unix_socket_names, payload, snapshot, EchoCase,
                          main)


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

    def test_dedicated_receiver_with_four_shards_echoes_every_client(self):
        server = self.start("--shards", "4", "--dedicated-receiver")
        for i in range(8):
            self.assert_echo(server, self.client("path"), b"dedicated receiver %d" % i)


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

    def test_bad_max_total_queued_bytes_is_rejected(self):
        # Checked on the text: "-5" must not wrap around to a huge size.
        for value in ["0", "-5", "abc", "4k", ""]:
            with self.subTest(max_total_queued_bytes=value):
                names = [f"'{value}'"] if value else ["--max-total-queued-bytes"]
                self.assert_rejected(["--path", self.tmp("q.sock"), "--max-total-queued-bytes", value], names)

    def test_dedicated_receiver_with_one_shard_is_rejected(self):
        line = self.assert_rejected(["--path", self.tmp("d.sock"), "--dedicated-receiver"], ["dedicated_receiver"])
        self.assertIn("shards = 1", line)

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


if __name__ == "__main__":
    sys.exit(main(sys.argv, sys.modules[__name__]))
