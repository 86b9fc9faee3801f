// SPDX-License-Identifier: MIT
// Helpers that newer liburing has and 2.3 (Debian 12) lacks.
#pragma once

#include <liburing.h>

namespace unixgram::detail::uring_compat {

/// io_uring_setup_buf_ring (liburing 2.4): mmaps a provided-buffer ring of `entries` (a power of
/// two) and registers it as group `bgid` (kernel 5.19). Returns nullptr and sets `*err` (-errno).
io_uring_buf_ring* setup_buf_ring(io_uring* ring, unsigned entries, int bgid, int* err) noexcept;
/// io_uring_free_buf_ring (liburing 2.4).
void free_buf_ring(io_uring* ring, io_uring_buf_ring* br, unsigned entries, int bgid) noexcept;

/// Whether IORING_OP_SEND takes a destination address (`io_uring_prep_send_set_addr`; kernel 6.1,
/// liburing 2.4's `io_uring_prep_sendto`). Probed once per process by sending one byte between two
/// temporary autobound AF_UNIX datagram sockets through a temporary ring; false on any failure.
bool addressed_send_supported() noexcept;

}  // namespace unixgram::detail::uring_compat
