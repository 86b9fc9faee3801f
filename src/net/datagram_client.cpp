// SPDX-License-Identifier: MIT
// The socket work of UnixDatagramClient: bind, connect, blocking send/recv with wake-up on close.
#include "unixgram/datagram_client.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <exception>
#include <stdexcept>
#include <string>
#include <system_error>

namespace unixgram::detail {

namespace {

using Clock = std::chrono::steady_clock;

// Longer timeouts mean "forever"; it also keeps now() + timeout from overflowing.
constexpr double kForeverSeconds = 1e9;

std::string quoted(const UnixAddress& address) { return "'" + address.to_string() + "'"; }

[[noreturn]] void throw_errno(int err, const std::string& what) {
    throw std::system_error(err, std::system_category(), what);
}

std::optional<Clock::time_point> deadline_after(const std::optional<std::chrono::duration<double>>& timeout) {
    if (!timeout) return std::nullopt;
    const double seconds = timeout->count();
    if (std::isnan(seconds)) throw std::invalid_argument("recv_packet timeout must not be NaN");
    const auto now = Clock::now();
    if (seconds <= 0) return now;
    if (seconds >= kForeverSeconds) return std::nullopt;
    return now + std::chrono::duration_cast<Clock::duration>(*timeout);
}

int pending_error(int fd) noexcept {
    int err = 0;
    socklen_t length = sizeof err;
    return ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &length) == 0 ? err : errno;
}

}  // namespace

/// One send or receive in progress: keeps the fds open until it ends, even across close().
class DatagramClientSocket::Use {
public:
    explicit Use(DatagramClientSocket& socket) : socket_(socket) {
        std::lock_guard lock(socket_.state_mutex_);
        if (socket_.closed_) throw ClientClosedError();
        ++socket_.users_;
        fd_ = socket_.fd_.get();
    }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    ~Use() {
        std::lock_guard lock(socket_.state_mutex_);
        if (--socket_.users_ == 0 && socket_.closed_) {
            socket_.fd_.reset();
            socket_.wake_fd_.reset();
        }
    }
    int fd() const noexcept { return fd_; }

private:
    DatagramClientSocket& socket_;
    int fd_ = -1;
};

/// The receiving thread's turn: at most one receive reads the socket and owns recv_buffer_.
class DatagramClientSocket::RecvTurn {
public:
    /// Throws TimeoutError if another receive keeps its turn past `deadline`.
    RecvTurn(DatagramClientSocket& socket, const std::optional<Clock::time_point>& deadline) : socket_(socket) {
        std::unique_lock lock(socket_.recv_mutex_);
        const auto idle = [this] { return !socket_.recv_busy_; };
        if (!deadline) {
            socket_.recv_idle_.wait(lock, idle);
        } else if (!socket_.recv_idle_.wait_until(lock, *deadline, idle)) {
            throw TimeoutError();
        }
        socket_.recv_busy_ = true;
    }
    RecvTurn(const RecvTurn&) = delete;
    RecvTurn& operator=(const RecvTurn&) = delete;
    ~RecvTurn() {
        {
            std::lock_guard lock(socket_.recv_mutex_);
            socket_.recv_busy_ = false;
        }
        socket_.recv_idle_.notify_one();
    }

private:
    DatagramClientSocket& socket_;
};

DatagramClientSocket::DatagramClientSocket(const UnixAddress& server, const UnixAddress& local,
                                           const DatagramClientOptions& options) {
    if (server.is_unnamed())
        throw std::invalid_argument("the server address must be a pathname or an abstract name, not <unnamed>");
    if (options.max_datagram_size == 0) throw std::invalid_argument("max_datagram_size must be at least 1, got 0");
    recv_buffer_.resize(options.max_datagram_size);

    UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) throw_errno(errno, "cannot create an AF_UNIX datagram socket");
    UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake) throw_errno(errno, "cannot create an eventfd");

    // An unnamed address has length sizeof(sa_family_t): binding it is the kernel's autobind.
    if (::bind(fd.get(), local.data(), local.length()) != 0)
        throw_errno(errno, local.is_unnamed() ? std::string("cannot autobind the client socket")
                                              : "cannot bind to " + quoted(local));
    try {
        if (::connect(fd.get(), server.data(), server.length()) != 0)
            throw_errno(errno, "cannot connect to " + quoted(server));
        sockaddr_un name{};
        socklen_t length = sizeof name;
        if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&name), &length) != 0)
            throw_errno(errno, "cannot read the name of the socket bound to " + quoted(local));
        local_ = UnixAddress::from_sockaddr(&name, length);
        length = sizeof name;
        peer_ = ::getpeername(fd.get(), reinterpret_cast<sockaddr*>(&name), &length) == 0
                    ? UnixAddress::from_sockaddr(&name, length)
                    : server;
    } catch (...) {
        // bind created this file (it fails with EADDRINUSE on any existing path): remove it again.
        if (local.is_pathname()) ::unlink(std::string(local.name()).c_str());
        throw;
    }
    fd_ = std::move(fd);
    wake_fd_ = std::move(wake);
}

DatagramClientSocket::~DatagramClientSocket() { close(); }

DatagramClientSocket::Wait DatagramClientSocket::wait(int fd, short events,
                                                      const std::optional<Clock::time_point>& deadline) {
    for (;;) {
        int timeout_ms = -1;
        if (deadline) {
            const auto left = *deadline - Clock::now();
            timeout_ms = left <= Clock::duration::zero()
                             ? 0
                             : static_cast<int>(std::min<std::chrono::milliseconds::rep>(
                                   std::chrono::ceil<std::chrono::milliseconds>(left).count(), INT_MAX));
        }
        // wake_fd_ stays open while this call is a user of the socket (see Use).
        pollfd fds[2] = {{fd, events, 0}, {wake_fd_.get(), POLLIN, 0}};
        const int ready = ::poll(fds, 2, timeout_ms);
        if (ready < 0) {
            if (errno == EINTR) continue;
            throw_errno(errno, "cannot wait on the socket connected to " + quoted(peer_));
        }
        if (fds[1].revents != 0) return Wait::closed;
        if (fds[0].revents != 0) return Wait::ready;
        if (deadline && Clock::now() >= *deadline) return Wait::timeout;
    }
}

void DatagramClientSocket::send(Serialize serialize, const void* context) {
    std::lock_guard lock(send_mutex_);
    Use use(*this);
    send_buffer_.clear();
    try {
        serialize(context, send_buffer_);
    } catch (...) {
        std::throw_with_nested(std::runtime_error("protocol.make_datagram() crashed"));
    }
    for (;;) {
        // MSG_DONTWAIT and poll rather than a blocking send, so that close() can interrupt the wait.
        if (::send(use.fd(), send_buffer_.data(), send_buffer_.size(), MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) return;
        int err = errno;
        if (err == EINTR) continue;
        if (err == EAGAIN || err == EWOULDBLOCK) {
            switch (wait(use.fd(), POLLOUT, std::nullopt)) {
                case Wait::closed: throw ClientClosedError();
                case Wait::timeout:
                case Wait::ready: err = pending_error(use.fd()); break;
            }
            if (err == 0) continue;
        }
        // The first send after the server's socket closed gets ECONNREFUSED and the kernel
        // disconnects us; later ones would get ENOTCONN. Both mean "the server is gone".
        if (err == ENOTCONN || err == ECONNRESET) err = ECONNREFUSED;
        throw_errno(err, "cannot send to " + quoted(peer_));
    }
}

void DatagramClientSocket::recv(std::optional<std::chrono::duration<double>> timeout, Parse parse, void* context) {
    const auto deadline = deadline_after(timeout);
    RecvTurn turn(*this, deadline);
    Use use(*this);
    for (;;) {
        sockaddr_un from{};
        socklen_t from_length = sizeof from;
        // MSG_TRUNC makes the result the datagram's real length, so truncation cannot go unseen.
        const ssize_t n = ::recvfrom(use.fd(), recv_buffer_.data(), recv_buffer_.size(), MSG_DONTWAIT | MSG_TRUNC,
                                     reinterpret_cast<sockaddr*>(&from), &from_length);
        if (n < 0) {
            const int err = errno;
            if (err == EINTR) continue;
            if (err != EAGAIN && err != EWOULDBLOCK) throw_errno(err, "cannot receive from " + quoted(peer_));
            switch (wait(use.fd(), POLLIN, deadline)) {
                case Wait::closed: throw ClientClosedError();
                case Wait::timeout: throw TimeoutError();
                case Wait::ready: continue;
            }
        }
        // While connected the kernel delivers only the server's datagrams; once a refused send has
        // disconnected us, anyone who knows our name could send, so filter here too.
        if (!(UnixAddress::from_sockaddr(&from, from_length) == peer_)) continue;
        const auto size = static_cast<std::size_t>(n);
        if (size > recv_buffer_.size())
            throw std::runtime_error("a datagram of " + std::to_string(size) + " bytes from " + quoted(peer_) +
                                     " was truncated: it is larger than max_datagram_size (" +
                                     std::to_string(recv_buffer_.size()) + ")");
        try {
            parse(context, std::span<const std::byte>(recv_buffer_.data(), size));
        } catch (const ParseError&) {
            throw;
        } catch (...) {
            std::throw_with_nested(std::runtime_error("protocol.build_packet() crashed"));
        }
        return;
    }
}

void DatagramClientSocket::close() noexcept {
    std::lock_guard lock(state_mutex_);
    if (closed_) return;
    closed_ = true;
    if (users_ == 0) {
        fd_.reset();
        wake_fd_.reset();
    } else {
        // Stays readable: wakes the calls in progress and any that start polling later.
        (void)::eventfd_write(wake_fd_.get(), 1);
    }
}

bool DatagramClientSocket::is_closed() const noexcept {
    std::lock_guard lock(state_mutex_);
    return closed_;
}

int DatagramClientSocket::fileno() const noexcept {
    std::lock_guard lock(state_mutex_);
    return closed_ ? -1 : fd_.get();
}

UnixAddress DatagramClientSocket::local_name() const {
    std::lock_guard lock(state_mutex_);
    if (closed_) throw ClientClosedError();
    return local_;
}

UnixAddress DatagramClientSocket::peer_name() const {
    std::lock_guard lock(state_mutex_);
    if (closed_) throw ClientClosedError();
    return peer_;
}

}  // namespace unixgram::detail
