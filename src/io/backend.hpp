// SPDX-License-Identifier: MIT
// Selects the compile-time Backend (io_uring or epoll) and its configuration.
#pragma once

#include <cstddef>

namespace unixgram::detail {

struct ServerStatsCounters;

/// What a backend needs to know; identical for both backends.
struct BackendConfig {
    std::size_t max_datagram_size = 65536;
    bool receive_control = false;  ///< reserve room for SCM_RIGHTS / SCM_CREDENTIALS
    ServerStatsCounters* stats = nullptr;
    bool receiver = true;  ///< reads the socket (shard 0); other shards only send on it
};

}  // namespace unixgram::detail

#if defined(UNIXGRAM_BACKEND_IO_URING)
#include "io/uring/uring_backend.hpp"
namespace unixgram::detail {
using Backend = UringBackend;
}
#elif defined(UNIXGRAM_BACKEND_EPOLL)
#include "io/epoll/epoll_backend.hpp"
namespace unixgram::detail {
using Backend = EpollBackend;
}
#else
#error "define UNIXGRAM_BACKEND_IO_URING or UNIXGRAM_BACKEND_EPOLL (meson option 'backend')"
#endif
