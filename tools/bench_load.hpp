// SPDX-License-Identifier: MIT
// unixgram-bench's load: the datagrams, the load threads and their clients (tools/bench.cpp says why it is
// built the way it is; this header is its only user).
#pragma once

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "latency_histogram.hpp"

namespace unixgram::bench {

constexpr std::size_t kHeaderSize = 16;  // sequence number, client number
constexpr std::size_t kMaxDatagram = 65536;
constexpr std::size_t kPatternPeriod = 251;  // prime, so neighbouring datagrams' patterns differ
constexpr unsigned kBatch = 64;              // datagrams per sendmmsg / recvmmsg
constexpr std::uint64_t kDrainNs = 1'000'000'000;
// Time to retry a send refused by a full server queue when no reply wakes the thread first: about what a
// server needs for the 11 datagrams its queue holds; shorter would make failing sendmmsg calls contend with
// the server for the queue's lock.
constexpr std::uint64_t kRetryNs = 50'000;
constexpr std::uint64_t kMaxWaitNs = 100'000'000;  // so a stop request is seen promptly
constexpr double kPaceBurstNs = 1'000'000;          // --rate: credit never exceeds 1 ms of sends

inline volatile std::sig_atomic_t g_stop = 0;  // set by SIGINT / SIGTERM

[[noreturn]] inline void die(const std::string& message) {
    std::fprintf(stderr, "unixgram-bench: %s\n", message.c_str());
    std::fflush(stderr);
    std::_Exit(2);  // may run on a load thread: no static destructors under the other threads' feet
}

[[noreturn]] inline void die_errno(const std::string& what, int error) {
    die(what + ": " + std::generic_category().message(error));
}

inline std::uint64_t now_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

inline timespec to_timespec(std::uint64_t ns) noexcept {
    return {static_cast<time_t>(ns / 1'000'000'000u), static_cast<long>(ns % 1'000'000'000u)};
}

struct Options {
    std::string path;
    unsigned clients = 16;
    unsigned window = 32;
    std::size_t size = 64;
    double duration_s = 3.0;
    double warmup_s = 1.0;
    std::optional<pid_t> server_pid;
    unsigned threads = 1;
    double rate = 0;  ///< datagrams/s in total; 0: as fast as the windows allow
    bool connect = false;  ///< connect each client to the server (send without an address)
    bool json = false;
};

/// The server's address: "@name" is abstract (leading NUL, no terminator), anything else a pathname.
struct Address {
    sockaddr_un addr{};
    socklen_t len = 0;
};

struct Errors {
    std::uint64_t wrong_length = 0;
    std::uint64_t wrong_content = 0;  // payload or header altered, or another client's datagram
    std::uint64_t out_of_order = 0;   // arrived after a later one of the same client; also duplicates

    std::uint64_t total() const noexcept { return wrong_length + wrong_content + out_of_order; }
    void add(const Errors& o) noexcept {
        wrong_length += o.wrong_length;
        wrong_content += o.wrong_content;
        out_of_order += o.out_of_order;
    }
};

/// What the run's phases are, by the monotonic clock. Only measure_end moves: SIGINT brings it forward.
struct Schedule {
    std::uint64_t measure_start = 0;
    std::atomic<std::uint64_t> measure_end{0};
};

/// The datagram `seq` of client `id`, written into `out` (options.size bytes).
class Payload {
public:
    explicit Payload(std::size_t size) : size_(size), pattern_(size + kPatternPeriod) {
        for (std::size_t i = 0; i < pattern_.size(); ++i) pattern_[i] = static_cast<unsigned char>((i * 131 + 7) % 256);
    }

    void write(unsigned char* out, std::uint64_t seq, std::uint64_t id) const noexcept {
        std::memcpy(out, &seq, 8);
        std::memcpy(out + 8, &id, 8);
        std::memcpy(out + kHeaderSize, body(seq, id), size_ - kHeaderSize);
    }

    bool body_matches(const unsigned char* in, std::uint64_t seq, std::uint64_t id) const noexcept {
        return std::memcmp(in + kHeaderSize, body(seq, id), size_ - kHeaderSize) == 0;
    }

private:
    const unsigned char* body(std::uint64_t seq, std::uint64_t id) const noexcept {
        return pattern_.data() + (seq * 7 + id * 13) % kPatternPeriod;
    }

    std::size_t size_;
    std::vector<unsigned char> pattern_;
};

/// One load thread: its share of the clients, its epoll set, its send and receive batches.
class LoadThread {
public:
    LoadThread(const Options& options, const Address& server, const Payload& payload, Schedule& schedule,
               std::uint32_t first_id, std::uint32_t count)
        : options_(options), server_(server), payload_(payload), schedule_(schedule), first_id_(first_id),
          clients_(count), sent_at_(static_cast<std::size_t>(count) * options.window), send_queue_(count),
          send_buffer_(kBatch * options.size), recv_buffer_(kBatch * (options.size + 1)), events_(std::min(count, 512u)),
          rate_per_ns_(options.rate / options.threads / 1e9) {
        epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
        if (epoll_fd_ < 0) die_errno("epoll_create1", errno);
        for (std::uint32_t i = 0; i < count; ++i) {
            Client& c = clients_[i];
            c.id = first_id + i;
            c.fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (c.fd < 0) die_errno("socket (client " + std::to_string(c.id) + ")", errno);
            // Only the family: the kernel picks a fresh abstract name, one the server can reply to.
            sockaddr_un self{};
            self.sun_family = AF_UNIX;
            if (::bind(c.fd, reinterpret_cast<sockaddr*>(&self), sizeof(sa_family_t)) < 0) die_errno("autobind", errno);
            if (options.connect &&
                ::connect(c.fd, reinterpret_cast<const sockaddr*>(&server.addr), server.len) < 0) {
                die_errno("connect (client " + std::to_string(c.id) + ") to '" + options.path + "'", errno);
            }
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u32 = i;
            if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c.fd, &ev) < 0) die_errno("epoll_ctl", errno);
        }
        for (unsigned k = 0; k < kBatch; ++k) {
            send_iov_[k] = {send_buffer_.data() + k * options.size, options.size};
            if (!options.connect) {  // connected: the kernel knows the peer, and skips the lookup by name
                send_msgs_[k].msg_hdr.msg_name = const_cast<sockaddr_un*>(&server_.addr);
                send_msgs_[k].msg_hdr.msg_namelen = server_.len;
            }
            send_msgs_[k].msg_hdr.msg_iov = &send_iov_[k];
            send_msgs_[k].msg_hdr.msg_iovlen = 1;
            // One byte more than a valid reply, so a longer one shows as a wrong length.
            recv_iov_[k] = {recv_buffer_.data() + k * (options.size + 1), options.size + 1};
            recv_msgs_[k].msg_hdr.msg_iov = &recv_iov_[k];
            recv_msgs_[k].msg_hdr.msg_iovlen = 1;
        }
    }

    ~LoadThread() {
        for (auto& c : clients_) {
            if (c.fd >= 0) ::close(c.fd);
        }
        if (epoll_fd_ >= 0) ::close(epoll_fd_);
    }

    LoadThread(const LoadThread&) = delete;
    LoadThread& operator=(const LoadThread&) = delete;

    void run() noexcept {
        pace_start_ = now_ns();
        for (std::uint32_t i = 0; i < clients_.size(); ++i) enqueue(i);
        bool sending = true;
        std::uint64_t drain_deadline = 0;
        while (true) {
            const std::uint64_t now = now_ns();
            const std::uint64_t end = schedule_.measure_end.load(std::memory_order_relaxed);
            if (sending && now >= end) {
                sending = false;
                drain_deadline = now + kDrainNs;
            }
            if (!sending && (outstanding() == 0 || now >= drain_deadline)) break;
            if (sending) flush_sends();

            std::uint64_t until = sending ? end : drain_deadline;
            if (sending && now < schedule_.measure_start) until = schedule_.measure_start;
            std::uint64_t wait = until > now ? std::min(until - now, kMaxWaitNs) : 0;
            if (sending && queued_ != 0) wait = std::min(wait, kRetryNs);
            const timespec timeout = to_timespec(wait);
            const int n = ::epoll_pwait2(epoll_fd_, events_.data(), static_cast<int>(events_.size()), &timeout, nullptr);
            if (n < 0) {
                if (errno == EINTR) continue;
                die_errno("epoll_pwait2", errno);
            }
            for (int k = 0; k < n; ++k) {
                const std::uint32_t i = events_[static_cast<std::size_t>(k)].data.u32;
                read_replies(i);
                if (sending && room(clients_[i]) != 0) enqueue(i);
            }
            progress_.store(replies_, std::memory_order_relaxed);
        }
        for (const Client& c : clients_) lost_ += c.sent > c.received ? c.sent - c.received : 0;
    }

    std::uint64_t progress() const noexcept { return progress_.load(std::memory_order_relaxed); }
    std::uint64_t sent() const noexcept { return sent_; }
    std::uint64_t measured() const noexcept { return measured_; }
    std::uint64_t lost() const noexcept { return lost_; }
    std::uint64_t queue_full() const noexcept { return queue_full_; }
    const Errors& errors() const noexcept { return errors_; }
    const LatencyHistogram& latency() const noexcept { return latency_; }

private:
    // Hot: touched for every datagram of this client.
    struct Client {
        int fd = -1;
        std::uint32_t id = 0;
        std::uint64_t sent = 0;      // next sequence number to send
        std::uint64_t received = 0;  // replies, right or wrong
        std::uint64_t expected = 0;  // next sequence number in order
        bool queued = false;         // in send_queue_
    };

    unsigned room(const Client& c) const noexcept {
        const std::uint64_t in_flight = c.sent > c.received ? c.sent - c.received : 0;
        return in_flight >= options_.window ? 0 : static_cast<unsigned>(options_.window - in_flight);
    }

    std::uint64_t outstanding() const noexcept { return sent_ > replies_ ? sent_ - replies_ : 0; }

    void enqueue(std::uint32_t i) noexcept {
        if (clients_[i].queued) return;
        clients_[i].queued = true;
        send_queue_[(queue_head_ + queued_) % send_queue_.size()] = i;
        ++queued_;
    }

    /// --rate: how many datagrams may go now. Behind by more than kPaceBurstNs (a stall), it forgets the
    /// rest rather than catching up in one burst.
    std::uint64_t pace_credit(std::uint64_t now) noexcept {
        if (rate_per_ns_ <= 0) return ~std::uint64_t{0};
        const double burst = std::max(1.0, rate_per_ns_ * kPaceBurstNs);
        const double due = static_cast<double>(now - pace_start_) * rate_per_ns_;
        const double sent = static_cast<double>(sent_);
        if (due > sent + burst) {
            pace_start_ = now - static_cast<std::uint64_t>((sent + burst) / rate_per_ns_);
            return static_cast<std::uint64_t>(burst);
        }
        return due > sent ? static_cast<std::uint64_t>(due - sent) : 0;
    }

    /// Sends for the waiting clients in order until their windows are full or the server's queue is (or,
    /// with --rate, the credit is spent).
    void flush_sends() noexcept {
        std::uint64_t credit = pace_credit(now_ns());
        while (queued_ != 0) {
            const std::uint32_t i = send_queue_[queue_head_];
            Client& c = clients_[i];
            const unsigned open = std::min(room(c), kBatch);
            if (open != 0 && credit == 0) return;  // paced: the rest waits for the next turn
            const unsigned want = static_cast<unsigned>(std::min<std::uint64_t>(open, credit));
            if (want != 0) {
                for (unsigned k = 0; k < want; ++k) {
                    payload_.write(send_buffer_.data() + k * options_.size, c.sent + k, c.id);
                }
                const std::uint64_t now = now_ns();
                const int n = ::sendmmsg(c.fd, send_msgs_, want, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    die_errno("sendmmsg to '" + options_.path + "'", errno);
                }
                const unsigned done = n > 0 ? static_cast<unsigned>(n) : 0;
                for (unsigned k = 0; k < done; ++k) sent_at_[slot(c, c.sent + k)] = now;
                c.sent += done;
                sent_ += done;
                if (credit != ~std::uint64_t{0}) credit -= done;
                if (done < want) {  // the server's queue is full: for every client alike
                    ++queue_full_;
                    return;
                }
                if (room(c) != 0) continue;  // window still open: more for this client (or wait for credit)
            }
            c.queued = false;
            queue_head_ = (queue_head_ + 1) % static_cast<std::uint32_t>(send_queue_.size());
            --queued_;
        }
    }

    std::size_t slot(const Client& c, std::uint64_t seq) const noexcept {
        return static_cast<std::size_t>(c.id - first_id_) * options_.window + seq % options_.window;
    }

    void read_replies(std::uint32_t i) noexcept {
        Client& c = clients_[i];
        while (true) {
            // Ask for no more than the replies still due (at least one, so that a stray extra datagram is read
            // and counted): asking for more only makes the kernel try once more and fail, with --window 1 once
            // per datagram.
            const std::uint64_t due = c.sent > c.received ? c.sent - c.received : 0;
            const auto ask = static_cast<unsigned>(std::clamp<std::uint64_t>(due, 1, kBatch));
            const int n = ::recvmmsg(c.fd, recv_msgs_, ask, MSG_DONTWAIT, nullptr);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) return;
                if (errno == EINTR) continue;
                die_errno("recvmmsg from '" + options_.path + "'", errno);
            }
            const std::uint64_t now = now_ns();
            const bool measuring =
                now >= schedule_.measure_start && now < schedule_.measure_end.load(std::memory_order_relaxed);
            for (int k = 0; k < n; ++k) {
                check_reply(c, recv_buffer_.data() + static_cast<std::size_t>(k) * (options_.size + 1),
                            recv_msgs_[k].msg_len, now, measuring);
            }
            c.received += static_cast<unsigned>(n);
            replies_ += static_cast<unsigned>(n);
            if (static_cast<unsigned>(n) < ask || c.received >= c.sent) return;
        }
    }

    void check_reply(Client& c, const unsigned char* data, std::size_t length, std::uint64_t now, bool measuring) noexcept {
        if (length != options_.size) {
            ++errors_.wrong_length;
            return;
        }
        std::uint64_t seq = 0;
        std::uint64_t id = 0;
        std::memcpy(&seq, data, 8);
        std::memcpy(&id, data + 8, 8);
        if (id != c.id) {
            ++errors_.wrong_content;
            return;
        }
        if (seq >= c.sent) {  // never sent: the header was altered
            ++errors_.wrong_content;
            return;
        }
        // A gap is not counted here: what it skipped either comes later (out of order) or never (lost).
        if (seq < c.expected) {
            ++errors_.out_of_order;
        } else {
            c.expected = seq + 1;
        }
        if (!payload_.body_matches(data, seq, c.id)) ++errors_.wrong_content;
        if (measuring) {
            ++measured_;
            if (seq + options_.window >= c.sent) latency_.record(now - sent_at_[slot(c, seq)]);
        }
    }

    const Options& options_;
    const Address& server_;
    const Payload& payload_;
    Schedule& schedule_;
    std::uint32_t first_id_;
    int epoll_fd_ = -1;
    std::vector<Client> clients_;
    std::vector<std::uint64_t> sent_at_;  // clients_.size() rings of options_.window send times
    std::vector<std::uint32_t> send_queue_;  // ring of client indices waiting to send, each at most once
    std::uint32_t queue_head_ = 0;
    std::uint32_t queued_ = 0;
    std::vector<unsigned char> send_buffer_;
    std::vector<unsigned char> recv_buffer_;
    iovec send_iov_[kBatch]{};
    iovec recv_iov_[kBatch]{};
    mmsghdr send_msgs_[kBatch]{};
    mmsghdr recv_msgs_[kBatch]{};
    std::vector<epoll_event> events_;
    const double rate_per_ns_;        // --rate, this thread's share; 0 when not paced
    std::uint64_t pace_start_ = 0;    // the pace's origin: sent_ datagrams are due at rate_per_ns_ from here

    std::uint64_t sent_ = 0;
    std::uint64_t replies_ = 0;
    std::uint64_t measured_ = 0;
    std::uint64_t lost_ = 0;
    std::uint64_t queue_full_ = 0;  // sends refused because the server's queue was full
    Errors errors_;
    LatencyHistogram latency_;
    // Read by the main thread for the progress line; on its own cache line, away from the hot fields.
    alignas(64) std::atomic<std::uint64_t> progress_{0};
};

}  // namespace unixgram::bench
