// SPDX-License-Identifier: MIT
// Contract tests for the socket file: spec §1.3 (cleanup), §1.4 (existing paths), DESIGN §7 (mode).
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <system_error>

#include "contract/harness.hpp"

namespace unixgram::testing {
namespace {

using TextUnixServer = UnixDatagramServer<std::string, std::string, TextProtocol>;
using TextHandler = DatagramRequestHandler<std::string, std::string>;

class Echo : public TextHandler {
public:
    Session<std::string> handle(Client<std::string>& client) override {
        std::string request = co_yield recv();
        co_await client.send_packet(request);
    }
};

/// A text echo server on `address`, logging into a CaptureSink, not started; closed on destruction.
class IdleServer {
public:
    explicit IdleServer(const UnixAddress& address, ServerOptions options = {}) {
        auto [log, sink] = capturing_logger();
        sink_ = sink;
        options.logger = log;
        server_ = std::make_unique<TextUnixServer>(address, TextProtocol{}, handler_, options);
    }
    ~IdleServer() { server_->close(); }
    TextUnixServer& server() { return *server_; }
    CaptureSink& log() { return *sink_; }

private:
    Echo handler_;
    std::shared_ptr<CaptureSink> sink_;
    std::unique_ptr<TextUnixServer> server_;
};

/// What lstat() reports about a directory entry, plus its content (regular file) or target (symlink).
struct Entry {
    bool exists = false;
    dev_t dev = 0;
    ino_t ino = 0;
    mode_t mode = 0;  // type and permissions
    off_t size = 0;
    nlink_t nlink = 0;
    long mtime_ns = 0;
    long ctime_ns = 0;  // any chmod/chown/rename of the entry moves it
    std::string content;

    friend bool operator==(const Entry&, const Entry&) = default;
};

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

void write_all(const std::string& path, const std::string& content) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
}

Entry snapshot(const std::string& path) {
    Entry e;
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return e;
    e.exists = true;
    e.dev = st.st_dev;
    e.ino = st.st_ino;
    e.mode = st.st_mode;
    e.size = st.st_size;
    e.nlink = st.st_nlink;
    e.mtime_ns = st.st_mtim.tv_sec * 1000000000L + st.st_mtim.tv_nsec;
    e.ctime_ns = st.st_ctim.tv_sec * 1000000000L + st.st_ctim.tv_nsec;
    if (S_ISREG(st.st_mode)) e.content = read_all(path);
    if (S_ISLNK(st.st_mode)) e.content = std::filesystem::read_symlink(path).string();
    return e;
}

std::string octal(unsigned value) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0%03o", value);
    return buf;
}

/// The process umask, read without changing it (Linux 4.7+: "Umask:" in /proc/self/status).
mode_t current_umask() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("Umask:", 0) == 0) return static_cast<mode_t>(std::stoul(line.substr(6), nullptr, 8));
    ADD_FAILURE() << "no Umask line in /proc/self/status";
    return 0;
}

/// Sets the umask for the scope of a test, restoring the previous one.
class UmaskGuard {
public:
    explicit UmaskGuard(mode_t mask) : saved_(::umask(mask)) {}
    ~UmaskGuard() { ::umask(saved_); }

private:
    mode_t saved_;
};

std::string unique_abstract_name() {
    std::random_device rd;
    return "unixgram-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()) + std::to_string(rd());
}

std::optional<std::string> ask(RawClient& client, const UnixAddress& to, std::string_view request) {
    client.send(to, request);
    return client.recv();
}

/// Receives one datagram with recvfrom() and returns who sent it, as the kernel names the sender.
std::optional<UnixAddress> recv_sender(RawClient& client, std::string* payload) {
    pollfd p{client.fd(), POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) return std::nullopt;
    std::string buf(70000, '\0');
    sockaddr_un from{};
    socklen_t from_len = sizeof from;
    const ssize_t n = ::recvfrom(client.fd(), buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) return std::nullopt;
    buf.resize(static_cast<std::size_t>(n));
    if (payload != nullptr) *payload = buf;
    return UnixAddress::from_sockaddr(&from, from_len);
}

/// Binding `path` must fail through each entry point with a std::system_error naming the path
/// (EADDRINUSE), and leave the entry exactly as it was.
void expect_bind_refused_and_entry_untouched(const std::string& path) {
    const Entry before = snapshot(path);
    ASSERT_TRUE(before.exists) << path;
    IdleServer srv(UnixAddress::pathname(path));
    EXPECT_EQ(snapshot(path), before) << "the constructor must touch nothing";

    auto expect_refused = [&](const char* entry_point, const std::function<void()>& call) {
        try {
            call();
            ADD_FAILURE() << entry_point << " bound over an existing " << path;
        } catch (const std::system_error& e) {
            EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << entry_point << ": " << e.what();
            EXPECT_EQ(e.code(), std::errc::address_in_use) << entry_point << ": " << e.what();
        }
        EXPECT_FALSE(srv.server().is_listening()) << entry_point;
        EXPECT_EQ(snapshot(path), before) << entry_point << " changed " << path;
    };
    expect_refused("activate()", [&] { srv.server().activate(); });
    expect_refused("serve_forever()", [&] { srv.server().serve_forever(); });
    expect_refused("start()", [&] { srv.server().start(); });

    srv.server().close();
    EXPECT_EQ(snapshot(path), before) << "close() removed or changed an entry it did not create";
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// ---- §1.4 an existing path is never replaced ----------------------------------------------------

// Spec §1.4: bind() on an existing regular file fails with EADDRINUSE; the file is untouched.
TEST(SocketFileContract, ExistingRegularFileIsRefusedAndLeftUntouched) {
    TempDir dir;
    const std::string path = dir.file("server.sock");
    write_all(path, "precious data\n");
    expect_bind_refused_and_entry_untouched(path);
    EXPECT_EQ(read_all(path), "precious data\n");
}

// Spec §1.4 (any existing entry): a directory.
TEST(SocketFileContract, ExistingDirectoryIsRefusedAndLeftUntouched) {
    TempDir dir;
    const std::string path = dir.file("server.sock");
    ASSERT_EQ(::mkdir(path.c_str(), 0755), 0);
    write_all(path + "/inside", "kept");
    expect_bind_refused_and_entry_untouched(path);
    EXPECT_EQ(read_all(path + "/inside"), "kept");
}

// Spec §1.4: a symlink to an existing file; neither the link nor its target changes.
TEST(SocketFileContract, ExistingSymlinkToAFileIsRefusedAndLeftUntouched) {
    TempDir dir;
    const std::string target = dir.file("target.txt");
    const std::string path = dir.file("server.sock");
    write_all(target, "target content");
    ASSERT_EQ(::symlink(target.c_str(), path.c_str()), 0);
    const Entry target_before = snapshot(target);
    expect_bind_refused_and_entry_untouched(path);
    EXPECT_EQ(snapshot(target), target_before);
}

// Spec §1.4: a dangling symlink; nothing may be created at its target either.
TEST(SocketFileContract, ExistingDanglingSymlinkIsRefusedAndLeftUntouched) {
    TempDir dir;
    const std::string target = dir.file("nowhere.sock");
    const std::string path = dir.file("server.sock");
    ASSERT_EQ(::symlink(target.c_str(), path.c_str()), 0);
    expect_bind_refused_and_entry_untouched(path);
    EXPECT_FALSE(snapshot(target).exists) << "a socket was created through the dangling link";
}

// Spec §1.4: a FIFO.
TEST(SocketFileContract, ExistingFifoIsRefusedAndLeftUntouched) {
    TempDir dir;
    const std::string path = dir.file("server.sock");
    ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
    expect_bind_refused_and_entry_untouched(path);
}

// Spec §1.4: another socket bound there and alive; it keeps working.
TEST(SocketFileContract, LiveSocketIsRefusedAndKeepsWorking) {
    TempDir dir;
    const std::string path = dir.file("server.sock");
    RawClient owner(UnixAddress::pathname(path));
    expect_bind_refused_and_entry_untouched(path);

    RawClient sender(UnixAddress::pathname(dir.file("sender.sock")));
    sender.send(UnixAddress::pathname(path), "still yours");
    EXPECT_EQ(owner.recv(), "still yours");
}

// Spec §1.4 / DESIGN §7: a stale socket file (its socket closed) is not removed either.
TEST(SocketFileContract, StaleSocketFileIsRefusedAndLeftUntouched) {
    TempDir dir;
    const std::string path = dir.file("server.sock");
    { RawClient gone(UnixAddress::pathname(path)); }
    ASSERT_TRUE(snapshot(path).exists);
    expect_bind_refused_and_entry_untouched(path);
}

// ---- pathname length ----------------------------------------------------------------------------

// sun_path holds 108 bytes with its NUL: a 107-byte path binds, serves and is reported whole.
TEST(SocketFileContract, PathnameOf107BytesWorks) {
    TempDir dir;
    const std::string prefix = dir.path().string() + "/";
    if (prefix.size() + 1 > 107) GTEST_SKIP() << "TMPDIR too long for a 107-byte path: " << prefix;
    const std::string path = prefix + std::string(107 - prefix.size(), 's');
    ASSERT_EQ(path.size(), 107u);

    IdleServer srv(UnixAddress::pathname(path));
    srv.server().start();
    EXPECT_EQ(srv.server().address().to_string(), path);
    EXPECT_TRUE(S_ISSOCK(snapshot(path).mode));
    RawClient c(UnixAddress::pathname(dir.file("c.sock")));
    EXPECT_EQ(ask(c, UnixAddress::pathname(path), "long"), "long");
    srv.server().close();
    EXPECT_FALSE(snapshot(path).exists);
}

// A 108-byte path cannot be bound without truncation: UnixAddress::pathname refuses it, naming it.
TEST(SocketFileContract, PathnameOf108BytesIsRejectedNamingThePath) {
    TempDir dir;
    const std::string prefix = dir.path().string() + "/";
    const std::string path = prefix + std::string(108 - prefix.size(), 'x');
    ASSERT_EQ(path.size(), 108u);
    try {
        (void)UnixAddress::pathname(path);
        ADD_FAILURE() << "a 108-byte path was accepted";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
    EXPECT_FALSE(snapshot(path).exists);
    EXPECT_FALSE(snapshot(path.substr(0, 107)).exists) << "nothing may be bound at a truncated name";
}

// ---- DESIGN §7 mode -----------------------------------------------------------------------------

void expect_exact_mode_under_umask(mode_t mask) {
    UmaskGuard umask_for_test(mask);
    for (mode_t mode : {0600, 0640, 0660, 0666, 0777}) {
        SCOPED_TRACE("mode " + octal(mode) + " under umask " + octal(mask));
        TempDir dir;
        const std::string path = dir.file("server.sock");
        ServerOptions options;
        options.mode = mode;
        IdleServer srv(UnixAddress::pathname(path), options);
        srv.server().start();

        const Entry e = snapshot(path);
        ASSERT_TRUE(e.exists);
        EXPECT_TRUE(S_ISSOCK(e.mode));
        EXPECT_EQ(octal(e.mode & 07777), octal(mode));
        EXPECT_EQ(octal(current_umask()), octal(mask)) << "the library must never change the umask";
        RawClient c(UnixAddress::pathname(dir.file("c.sock")));
        EXPECT_EQ(ask(c, UnixAddress::pathname(path), "hello"), "hello");
        EXPECT_EQ(srv.server().address(), UnixAddress::pathname(path)) << "bound at its own name, never renamed";
    }
}

// DESIGN §7: the socket file gets exactly `mode`, whatever the umask, and the umask is left alone.
TEST(SocketFileContract, ModeIsAppliedExactlyUnderUmask077) { expect_exact_mode_under_umask(0077); }
TEST(SocketFileContract, ModeIsAppliedExactlyUnderUmask000) { expect_exact_mode_under_umask(0000); }
TEST(SocketFileContract, ModeIsAppliedExactlyUnderUmask022) { expect_exact_mode_under_umask(0022); }

// ServerOptions::mode: abstract and autobind sockets have no permissions → invalid_argument at
// construction, naming the mode; nothing is bound.
TEST(SocketFileContract, ModeWithAnAbstractOrAutobindAddressIsRejectedAtConstruction) {
    const std::string name = unique_abstract_name();
    ServerOptions options;
    options.mode = 0600;
    const std::size_t fds_before = open_fd_count();
    for (const UnixAddress& address : {UnixAddress::abstract(name), UnixAddress::autobind()}) {
        SCOPED_TRACE(address.to_string());
        try {
            IdleServer srv(address, options);
            ADD_FAILURE() << "constructed a server with a mode on a socket that has no file";
        } catch (const std::invalid_argument& e) {
            const std::string what = e.what();
            EXPECT_NE(what.find("mode"), std::string::npos) << what;
            EXPECT_NE(what.find("0600"), std::string::npos) << what;
        }
    }
    EXPECT_EQ(open_fd_count(), fds_before) << "no socket may be created";
    EXPECT_NO_THROW({ RawClient probe(UnixAddress::abstract(name)); }) << "the abstract name must still be free";
}

// ---- §1.3 cleanup -------------------------------------------------------------------------------

// Spec §1.3 (T test____server_close____while_server_is_running): close() unlinks the file.
TEST(SocketFileContract, CloseUnlinksTheSocketFile) {
    TempDir dir;
    const std::string serving_path = dir.file("serving.sock");
    IdleServer serving(UnixAddress::pathname(serving_path));
    serving.server().start();
    ASSERT_TRUE(S_ISSOCK(snapshot(serving_path).mode));
    serving.server().close();
    EXPECT_FALSE(snapshot(serving_path).exists);

    const std::string bound_path = dir.file("bound.sock");
    IdleServer bound_only(UnixAddress::pathname(bound_path));
    bound_only.server().activate();
    ASSERT_TRUE(S_ISSOCK(snapshot(bound_path).mode));
    bound_only.server().close();
    EXPECT_FALSE(snapshot(bound_path).exists);
    EXPECT_EQ(serving.log().count_at_least(spdlog::level::warn), 0u) << serving.log().dump();
    EXPECT_EQ(bound_only.log().count_at_least(spdlog::level::warn), 0u) << bound_only.log().dump();
}

// Spec §1.3 step 2 (T ..._unix_socket_already_removed): the file is gone → silently ignored.
TEST(SocketFileContract, CloseAfterTheFileWasRemovedLogsNothing) {
    TempDir dir;
    const std::string path = dir.file("server.sock");
    IdleServer srv(UnixAddress::pathname(path));
    srv.server().start();
    ASSERT_EQ(::unlink(path.c_str()), 0);

    EXPECT_NO_THROW(srv.server().close());
    EXPECT_FALSE(snapshot(path).exists);
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// Spec §1.3 step 3 (T ..._removed_then_reused): a file that replaced ours is left alone, silently.
TEST(SocketFileContract, CloseLeavesAFileThatReplacedTheSocket) {
    TempDir dir;
    const std::string path = dir.file("server.sock");
    IdleServer srv(UnixAddress::pathname(path));
    srv.server().start();
    ASSERT_EQ(::unlink(path.c_str()), 0);
    write_all(path, "someone else's file");
    const Entry replacement = snapshot(path);

    srv.server().close();
    EXPECT_EQ(snapshot(path), replacement);
    EXPECT_EQ(read_all(path), "someone else's file");
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// DESIGN §7 (cleanup compares st_dev and st_ino): another socket that took the path stays alive.
TEST(SocketFileContract, CloseLeavesASocketThatReplacedOurs) {
    TempDir dir;
    const std::string path = dir.file("server.sock");
    IdleServer srv(UnixAddress::pathname(path));
    srv.server().start();
    ASSERT_EQ(::unlink(path.c_str()), 0);
    RawClient newcomer(UnixAddress::pathname(path));
    const Entry replacement = snapshot(path);

    srv.server().close();
    EXPECT_EQ(snapshot(path), replacement);
    RawClient sender(UnixAddress::pathname(dir.file("sender.sock")));
    sender.send(UnixAddress::pathname(path), "for the newcomer");
    EXPECT_EQ(newcomer.recv(), "for the newcomer");
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// Spec §1.3: abstract addresses have no file; after close() the name is free at once.
TEST(SocketFileContract, CloseOfAnAbstractServerLeavesNothingBound) {
    const std::string name = unique_abstract_name();
    IdleServer srv(UnixAddress::abstract(name));
    srv.server().start();
    EXPECT_FALSE(snapshot(name).exists);
    EXPECT_FALSE(snapshot("@" + name).exists);

    srv.server().close();
    EXPECT_TRUE(srv.server().address().is_unnamed());
    EXPECT_NO_THROW({ RawClient probe(UnixAddress::abstract(name)); })
        << "the abstract name is still bound after close()";
    EXPECT_EQ(srv.log().count_at_least(spdlog::level::warn), 0u) << srv.log().dump();
}

// Spec §1.3: after close() an abstract name can be served again right away; closing must release
// the socket synchronously (io_uring teardown included), so repeat it.
TEST(SocketFileContract, AbstractNameCanBeReboundRightAfterClose) {
    const std::string name = unique_abstract_name();
    TempDir dir;
    RawClient c(UnixAddress::pathname(dir.file("c.sock")));
    for (int i = 0; i < 20; ++i) {
        SCOPED_TRACE("round " + std::to_string(i));
        IdleServer srv(UnixAddress::abstract(name));
        try {
            srv.server().start();
        } catch (const std::system_error& e) {
            FAIL() << "could not bind the abstract name closed a moment ago: " << e.what();
        }
        const std::string request = "round " + std::to_string(i);
        EXPECT_EQ(ask(c, UnixAddress::abstract(name), request), request);
        srv.server().close();
    }
}

// ---- DESIGN §7 replies come from the bound name -----------------------------------------------

void expect_replies_from(const UnixAddress& server_address, const ServerOptions& options, TempDir& dir) {
    IdleServer srv(server_address, options);
    srv.server().start();
    RawClient c(UnixAddress::pathname(dir.file("c.sock")));
    c.send(server_address, "who are you");
    std::string payload;
    const std::optional<UnixAddress> sender = recv_sender(c, &payload);
    ASSERT_TRUE(sender.has_value());
    EXPECT_EQ(payload, "who are you");
    EXPECT_EQ(*sender, server_address) << "reply came from " << sender->to_string();

    // A connected client's getpeername() reports the same name.
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::connect(fd, server_address.data(), server_address.length()), 0) << std::strerror(errno);
    sockaddr_un peer{};
    socklen_t peer_len = sizeof peer;
    ASSERT_EQ(::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len), 0);
    EXPECT_EQ(UnixAddress::from_sockaddr(&peer, peer_len), server_address);
    ::close(fd);
}

// DESIGN §7: the socket is bound at its own name (never a temporary one renamed into place), so
// replies come from exactly that path.
TEST(SocketFileContract, RepliesComeFromTheBoundPath) {
    TempDir dir;
    expect_replies_from(UnixAddress::pathname(dir.file("server.sock")), {}, dir);
}

TEST(SocketFileContract, RepliesComeFromTheBoundPathWhenAModeIsSet) {
    TempDir dir;
    ServerOptions options;
    options.mode = 0640;
    expect_replies_from(UnixAddress::pathname(dir.file("server.sock")), options, dir);
}

TEST(SocketFileContract, RepliesComeFromTheBoundAbstractName) {
    TempDir dir;
    expect_replies_from(UnixAddress::abstract(unique_abstract_name()), {}, dir);
}

}  // namespace
}  // namespace unixgram::testing
