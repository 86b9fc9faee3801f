// SPDX-License-Identifier: MIT
// Creating, binding and cleaning up the server's socket (DESIGN §7).
#pragma once

#include <sys/types.h>

#include <optional>
#include <utility>

#include "unixgram/address.hpp"

namespace spdlog {
class logger;
}

namespace unixgram::detail {

struct BoundSocket {
    int fd = -1;
    UnixAddress address;                                   ///< getsockname()
    std::optional<std::pair<dev_t, ino_t>> inode;          ///< pathname sockets only
};

/// Creates a non-blocking AF_UNIX datagram socket bound to `address` with the file mode `mode`
/// (never wider, even for a moment; never a temporary name), and SO_SNDBUF `send_buffer` (0 =
/// default). Never removes or alters an existing path. Throws std::system_error naming the address
/// and what is in the way.
BoundSocket bind_socket(const UnixAddress& address, std::optional<mode_t> mode, std::size_t send_buffer);

/// Unlinks `path` if it is still the inode we bound. ENOENT is silent; other failures are logged
/// once at ERROR (spec §1.3).
void cleanup_socket_file(const UnixAddress& address, std::pair<dev_t, ino_t> inode, spdlog::logger& log) noexcept;

}  // namespace unixgram::detail
