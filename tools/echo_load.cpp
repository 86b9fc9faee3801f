// SPDX-License-Identifier: MIT
// unixgram-load: a closed-loop load generator for Unix datagram echo servers that verifies every reply.
//
// Usage:
//   unixgram-load --path /run/echo.sock [--clients 16] [--window 8] [--size 64] [--duration 3] [--json]
//
// Each client is its own autobound socket connected to the server and keeps `window` datagrams in
// flight. A datagram carries the client's sequence number in its first 8 bytes (little endian) and a
// pattern that depends on client and sequence number after them, so a reply that is truncated, altered,
// sent to the wrong client, duplicated or out of order is caught. One thread drives every client
// through epoll. At the end the tool stops sending, waits a little for the replies in flight, and
// counts what never came back as lost.
//
// Output: one line on stdout, "unixgram-load: 16 clients x 8 in flight, 64 B: 412345 datagrams/s,
// 26.4 MB/s, 0 errors" (datagrams/s counts verified replies; MB/s is their payload, one direction).
// With --json, stdout holds one JSON object instead and the line goes to stderr.
// Exit status: 0 when every reply was right and none was lost, 1 otherwise, 2 for a usage or setup error.

#include <fcntl.h>
#include <CLI/CLI.hpp>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kHeaderSize = 8;          // the sequence number
constexpr std::size_t kMaxDatagram = 65536;
constexpr std::size_t kPatternPeriod = 251;     // prime, so offsets of neighbouring datagrams differ
constexpr auto kDrainTimeout = std::chrono::seconds(2);

struct Options {
    std::string path;
    unsigned clients = 16;
    unsigned window = 8;
    std::size_t size = 64;
    double duration_s = 3.0;
    bool json = false;
};

struct Client {
    int fd = -1;
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
    std::uint64_t expected_seq = 0;   // next sequence number in order; differs from `received` after a loss
    bool waiting_for_room = false;    // EPOLLOUT armed: the server's queue (or our send buffer) is full
};

struct Totals {
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
    std::uint64_t wrong_length = 0;
    std::uint64_t wrong_content = 0;
    std::uint64_t out_of_order = 0;
    std::uint64_t lost = 0;

    std::uint64_t errors() const { return wrong_length + wrong_content + out_of_order + lost; }
};

volatile std::sig_atomic_t g_stop = 0;

[[noreturn]] void die(const std::string& message) {
    std::fprintf(stderr, "unixgram-load: %s\n", message.c_str());
    std::exit(2);
}

[[noreturn]] void die_errno(const std::string& what, int error) {
    die(what + ": " + std::generic_category().message(error));
}

/// Command line (CLI11). A bad value exits 2 with one line naming it.
Options parse_options(int argc, char** argv) {
    Options options;
    CLI::App app{"unixgram-load: drives verified echo load at a Unix datagram server"};
    app.add_option("--path", options.path, "the echo server's address ('@name' for an abstract name)")->required();
    app.add_option("--clients", options.clients, "client sockets, each autobound")->check(CLI::Range(1u, 65536u));
    app.add_option("--window", options.window, "datagrams in flight per client")->check(CLI::Range(1u, 1u << 20));
    app.add_option("--size", options.size, "datagram size in bytes")->check(CLI::Range(kHeaderSize, kMaxDatagram));
    app.add_option("--duration", options.duration_s, "seconds of load")->check(CLI::Range(1e-3, 86400.0));
    app.add_flag("--json", options.json, "print the result as one JSON object on stdout");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        std::exit(app.exit(e));
    } catch (const CLI::ParseError& e) {
        die(e.what());
    }
    return options;
}

/// The server's address: "@name" is abstract (leading NUL, no terminator), anything else a pathname.
std::pair<sockaddr_un, socklen_t> server_address(const std::string& text) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (text.empty() || text == "@") die("--path: an address is required (empty or bare '@' given)");
    if (text.size() > sizeof(addr.sun_path) - 1) {
        die("--path: '" + text + "' is longer than " + std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
    }
    if (text.front() == '@') {
        addr.sun_path[0] = '\0';
        std::memcpy(addr.sun_path + 1, text.data() + 1, text.size() - 1);
        return {addr, static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + text.size())};
    }
    std::memcpy(addr.sun_path, text.data(), text.size());
    return {addr, static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + text.size() + 1)};
}

/// Where in the pattern the body of datagram `seq` of client `client` starts.
std::size_t pattern_offset(std::size_t client, std::uint64_t seq) {
    return static_cast<std::size_t>((seq * 7 + client * 13) % kPatternPeriod);
}

class LoadRun {
public:
    explicit LoadRun(const Options& options) : options_(options) {
        pattern_.resize(options.size + kPatternPeriod);
        for (std::size_t i = 0; i < pattern_.size(); ++i) {
            pattern_[i] = static_cast<unsigned char>((i * 131 + 7) % kPatternPeriod);
        }
        send_buffer_.resize(options.size);
        // One byte more than any valid reply, so an oversized one is seen (MSG_TRUNC gives its length).
        recv_buffer_.resize(kMaxDatagram + 1);
    }

    ~LoadRun() {
        for (auto& c : clients_) {
            if (c.fd >= 0) ::close(c.fd);
        }
        if (epoll_fd_ >= 0) ::close(epoll_fd_);
    }

    void open_clients() {
        const auto [server, server_len] = server_address(options_.path);
        epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
        if (epoll_fd_ < 0) die_errno("epoll_create1", errno);
        clients_.resize(options_.clients);
        for (std::size_t i = 0; i < clients_.size(); ++i) {
            int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0) die_errno("socket", errno);
            clients_[i].fd = fd;
            // Binding only the family asks the kernel for a fresh abstract name: the server needs an
            // address to reply to, and nothing is left on disk.
            sockaddr_un self{};
            self.sun_family = AF_UNIX;
            if (::bind(fd, reinterpret_cast<sockaddr*>(&self), sizeof(sa_family_t)) < 0) die_errno("autobind", errno);
            // Connected, a client learns through EPOLLOUT when the server's queue has room again.
            if (::connect(fd, reinterpret_cast<const sockaddr*>(&server), server_len) < 0) {
                die_errno("connect to '" + options_.path + "'", errno);
            }
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u64 = i;
            if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) < 0) die_errno("epoll_ctl", errno);
        }
    }

    Totals run() {
        const auto start = Clock::now();
        const auto stop_sending = start + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(options_.duration_s));
        for (std::size_t i = 0; i < clients_.size(); ++i) fill_window(i);

        std::vector<epoll_event> events(std::max<std::size_t>(clients_.size(), 1));
        bool sending = true;
        auto drain_deadline = Clock::time_point::max();
        while (true) {
            const auto now = Clock::now();
            if (sending && (now >= stop_sending || g_stop)) {
                sending = false;
                drain_deadline = now + kDrainTimeout;
            }
            if (!sending && (totals_.received == totals_.sent || now >= drain_deadline)) break;
            const auto until = sending ? stop_sending : drain_deadline;
            const auto wait_ms = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
            int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()),
                                 static_cast<int>(std::clamp<long long>(wait_ms, 0, 1000)));
            if (n < 0) {
                if (errno == EINTR) continue;
                die_errno("epoll_wait", errno);
            }
            for (int k = 0; k < n; ++k) {
                const auto i = static_cast<std::size_t>(events[k].data.u64);
                if (events[k].events & (EPOLLIN | EPOLLERR)) read_replies(i);
                if (sending) fill_window(i);
            }
        }
        elapsed_ = std::chrono::duration<double>(Clock::now() - start).count();
        totals_.lost = totals_.sent - totals_.received;
        return totals_;
    }

    double elapsed_s() const { return elapsed_; }

private:
    void fill_window(std::size_t i) {
        Client& c = clients_[i];
        while (c.sent - c.received < options_.window) {
            std::memcpy(send_buffer_.data(), &c.sent, kHeaderSize);
            std::memcpy(send_buffer_.data() + kHeaderSize, pattern_.data() + pattern_offset(i, c.sent),
                        options_.size - kHeaderSize);
            ssize_t r = ::send(c.fd, send_buffer_.data(), send_buffer_.size(), MSG_NOSIGNAL);
            if (r < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    arm_writable(i, true);
                    return;
                }
                if (errno == EINTR) continue;
                die_errno("send to '" + options_.path + "'", errno);
            }
            ++c.sent;
            ++totals_.sent;
        }
        arm_writable(i, false);
    }

    void arm_writable(std::size_t i, bool on) {
        Client& c = clients_[i];
        if (c.waiting_for_room == on) return;
        epoll_event ev{};
        ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
        ev.data.u64 = i;
        if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev) < 0) die_errno("epoll_ctl", errno);
        c.waiting_for_room = on;
    }

    void read_replies(std::size_t i) {
        Client& c = clients_[i];
        while (true) {
            ssize_t r = ::recv(c.fd, recv_buffer_.data(), recv_buffer_.size(), MSG_TRUNC);
            if (r < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) return;
                if (errno == EINTR) continue;
                die_errno("recv from '" + options_.path + "'", errno);
            }
            check_reply(i, static_cast<std::size_t>(r));
            ++c.received;
            ++totals_.received;
        }
    }

    void check_reply(std::size_t i, std::size_t length) {
        Client& c = clients_[i];
        if (length != options_.size) {
            ++totals_.wrong_length;
            return;
        }
        std::uint64_t seq = 0;
        std::memcpy(&seq, recv_buffer_.data(), kHeaderSize);
        if (seq != c.expected_seq) {
            ++totals_.out_of_order;
            // Resynchronise, so that one loss or swap counts once and not for every later reply.
            if (seq >= c.sent) return;  // never sent: the content cannot be checked either
            c.expected_seq = seq;
        }
        ++c.expected_seq;
        if (std::memcmp(recv_buffer_.data() + kHeaderSize, pattern_.data() + pattern_offset(i, seq),
                        options_.size - kHeaderSize) != 0) {
            ++totals_.wrong_content;
        }
    }

    const Options& options_;
    std::vector<Client> clients_;
    std::vector<unsigned char> pattern_;
    std::vector<unsigned char> send_buffer_;
    std::vector<unsigned char> recv_buffer_;
    Totals totals_;
    int epoll_fd_ = -1;
    double elapsed_ = 0.0;
};

void on_signal(int) { g_stop = 1; }

}  // namespace

int main(int argc, char** argv) {
    const Options options = parse_options(argc, argv);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);

    LoadRun load(options);
    load.open_clients();
    const Totals totals = load.run();

    const double seconds = std::max(load.elapsed_s(), 1e-9);
    const double rate = static_cast<double>(totals.received) / seconds;
    const double mb_per_s = rate * static_cast<double>(options.size) / 1e6;
    const bool ok = totals.errors() == 0 && totals.received > 0;

    char line[256];
    std::snprintf(line, sizeof(line), "unixgram-load: %u clients x %u in flight, %zu B: %.0f datagrams/s, %.1f MB/s, %llu errors",
                  options.clients, options.window, options.size, rate, mb_per_s,
                  static_cast<unsigned long long>(totals.errors()));
    if (options.json) {
        std::fprintf(stderr, "%s\n", line);
        std::printf("{\"path\": \"");
        for (char ch : options.path) {  // JSON string escaping for what a path can hold
            auto u = static_cast<unsigned char>(ch);
            if (ch == '"' || ch == '\\') std::printf("\\%c", ch);
            else if (u < 0x20) std::printf("\\u%04x", u);
            else std::putchar(ch);
        }
        std::printf("\", \"clients\": %u, \"window\": %u, \"size\": %zu, \"duration_s\": %.3f, \"elapsed_s\": %.3f, "
                    "\"sent\": %llu, \"received\": %llu, \"datagrams_per_s\": %.1f, \"mb_per_s\": %.3f, "
                    "\"errors\": %llu, \"wrong_length\": %llu, \"wrong_content\": %llu, \"out_of_order\": %llu, "
                    "\"lost\": %llu, \"ok\": %s}\n",
                    options.clients, options.window, options.size, options.duration_s, seconds,
                    static_cast<unsigned long long>(totals.sent), static_cast<unsigned long long>(totals.received),
                    rate, mb_per_s, static_cast<unsigned long long>(totals.errors()),
                    static_cast<unsigned long long>(totals.wrong_length),
                    static_cast<unsigned long long>(totals.wrong_content),
                    static_cast<unsigned long long>(totals.out_of_order), static_cast<unsigned long long>(totals.lost),
                    ok ? "true" : "false");
    } else {
        std::printf("%s\n", line);
        if (totals.errors() != 0) {
            std::fprintf(stderr,
                         "unixgram-load: %llu wrong length, %llu wrong content, %llu out of order, %llu lost "
                         "(of %llu sent)\n",
                         static_cast<unsigned long long>(totals.wrong_length),
                         static_cast<unsigned long long>(totals.wrong_content),
                         static_cast<unsigned long long>(totals.out_of_order),
                         static_cast<unsigned long long>(totals.lost), static_cast<unsigned long long>(totals.sent));
        }
    }
    std::fflush(stdout);
    if (totals.received == 0) std::fprintf(stderr, "unixgram-load: no reply at all from '%s'\n", options.path.c_str());
    return ok ? 0 : 1;
}
