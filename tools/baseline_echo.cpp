// SPDX-License-Identifier: MIT
// unixgram-baseline-echo: the benchmark's reference — about the least work an echo server on one core can do.
//
//   unixgram-baseline-echo --path PATH        (PATH '@name' is an abstract name)
//
// One thread, one non-blocking socket: recvmmsg up to kBatch datagrams, sendmmsg the same buffers back with
// MSG_DONTWAIT. It receives first and polls only when the socket is empty (or replies wait): under load the
// queue is rarely empty, and a poll per batch would be a third system call that a real server need not make.
// A reply refused with EAGAIN (the peer's queue is full) is kept together with every reply after it, so no
// client's replies are reordered, and retried after the next poll, which then waits at most kRetry: nothing is
// dropped and nothing blocks forever. While replies wait, only the free slots are refilled.
//
// Prints "listening on <address>" when ready. SIGTERM or SIGINT: exit 0, socket file removed (if still ours).
// Exit status 2 for a usage or setup error.

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

constexpr unsigned kBatch = 64;
constexpr std::size_t kMaxDatagram = 65536;
constexpr timespec kRetry{0, 50'000};
constexpr timespec kNoWait{0, 0};
// Under endless load the loop never has to poll, but the stop signals are delivered only inside ppoll:
// look in at least this often.
constexpr unsigned kPollEvery = 256;

volatile std::sig_atomic_t g_stop = 0;

[[noreturn]] void die(const std::string& message) {
    std::fprintf(stderr, "unixgram-baseline-echo: %s\n", message.c_str());
    std::exit(2);
}

[[noreturn]] void die_errno(const std::string& what, int error) {
    die(what + ": " + std::generic_category().message(error));
}

void on_signal(int) { g_stop = 1; }

struct Address {
    sockaddr_un addr{};
    socklen_t len = 0;
    bool abstract = false;
};

Address parse_address(const std::string& text) {
    Address a;
    a.addr.sun_family = AF_UNIX;
    if (text.empty() || text == "@") die("--path: an address is required (empty or bare '@' given)");
    if (text.size() > sizeof(a.addr.sun_path) - 1) die("--path: '" + text + "' is too long");
    a.abstract = text.front() == '@';
    std::memcpy(a.addr.sun_path + (a.abstract ? 1 : 0), text.data() + (a.abstract ? 1 : 0),
                text.size() - (a.abstract ? 1 : 0));
    a.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + text.size() + (a.abstract ? 0 : 1));
    return a;
}

std::string parse_path(int argc, char** argv) {
    const std::string_view usage = "usage: unixgram-baseline-echo --path PATH   ('@name' for an abstract name)\n";
    std::string path;
    bool have_path = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            std::fputs(usage.data(), stdout);
            std::exit(0);
        }
        if (arg.starts_with("--path=")) {
            path = arg.substr(7);
        } else if (arg == "--path" && i + 1 < argc) {
            path = argv[++i];
        } else {
            std::fputs(usage.data(), stderr);
            die("unexpected argument '" + std::string(arg) + "'");
        }
        have_path = true;
    }
    if (!have_path) {
        std::fputs(usage.data(), stderr);
        die("--path is required");
    }
    return path;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string path = parse_path(argc, argv);
    const Address self = parse_address(path);

    // The stop signals stay blocked except inside ppoll, so one that arrives just before a poll is not slept
    // through.
    sigset_t stop_signals;
    sigset_t unblocked;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    ::sigprocmask(SIG_BLOCK, &stop_signals, &unblocked);
    sigdelset(&unblocked, SIGINT);
    sigdelset(&unblocked, SIGTERM);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);

    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die_errno("socket", errno);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&self.addr), self.len) < 0) die_errno("bind '" + path + "'", errno);
    struct stat bound {};
    if (!self.abstract && ::stat(self.addr.sun_path, &bound) < 0) die_errno("stat '" + path + "'", errno);
    std::printf("listening on %s\n", path.c_str());
    std::fflush(stdout);

    // Slot k owns buffer k, name k and iovec k; the mmsghdr array is permuted, never the buffers.
    std::vector<unsigned char> buffers(kBatch * kMaxDatagram);
    std::vector<sockaddr_un> names(kBatch);
    std::vector<iovec> iovs(kBatch);
    std::vector<mmsghdr> msgs(kBatch);
    for (unsigned k = 0; k < kBatch; ++k) {
        iovs[k].iov_base = buffers.data() + k * kMaxDatagram;
        msgs[k].msg_hdr.msg_name = &names[k];
        msgs[k].msg_hdr.msg_iov = &iovs[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
    }

    unsigned pending = 0;  // replies kept at the front of msgs, in arrival order
    bool readable = true;
    unsigned batches_since_poll = 0;
    unsigned long long deferred = 0;  // times a full peer made replies wait
    unsigned long long dropped = 0;
    while (!g_stop) {
        const bool must_wait = !readable || pending == kBatch;
        if (must_wait || ++batches_since_poll == kPollEvery) {
            batches_since_poll = 0;
            pollfd p{fd, static_cast<short>(pending < kBatch ? POLLIN : 0), 0};
            const timespec* timeout = !must_wait ? &kNoWait : pending != 0 ? &kRetry : nullptr;
            if (::ppoll(&p, 1, timeout, &unblocked) < 0) {
                if (errno == EINTR) continue;
                die_errno("ppoll", errno);
            }
            readable = (p.revents & POLLIN) != 0;
            if (!readable && pending == 0) continue;
        }

        unsigned total = pending;
        if (readable && pending < kBatch) {
            for (unsigned k = pending; k < kBatch; ++k) {
                msgs[k].msg_hdr.msg_namelen = sizeof(sockaddr_un);
                msgs[k].msg_hdr.msg_iov->iov_len = kMaxDatagram;
            }
            const int n = ::recvmmsg(fd, msgs.data() + pending, kBatch - pending, MSG_DONTWAIT, nullptr);
            if (n < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) die_errno("recvmmsg", errno);
                readable = false;
            } else {
                for (unsigned k = pending; k < pending + static_cast<unsigned>(n); ++k) {
                    msgs[k].msg_hdr.msg_iov->iov_len = msgs[k].msg_len;
                }
                total += static_cast<unsigned>(n);
            }
        }

        unsigned done = 0;
        while (done < total) {
            const int n = ::sendmmsg(fd, msgs.data() + done, total - done, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                done += static_cast<unsigned>(n);
            } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == EINTR) {
                ++deferred;
                break;  // kept: retried after the next poll
            } else {
                ++dropped;  // the peer is gone or unnamed: there is nobody to keep the reply for
                ++done;
            }
        }
        std::rotate(msgs.begin(), msgs.begin() + done, msgs.begin() + total);
        pending = total - done;
    }

    ::close(fd);
    struct stat now {};
    if (!self.abstract && ::stat(self.addr.sun_path, &now) == 0 && now.st_dev == bound.st_dev &&
        now.st_ino == bound.st_ino) {
        ::unlink(self.addr.sun_path);
    }
    std::fprintf(stderr, "unixgram-baseline-echo: replies deferred by a full peer %llu times; %llu dropped (peer gone or unnamed)\n",
                 deferred, dropped);
    return 0;
}
