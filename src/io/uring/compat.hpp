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

/// What probe_multishot_recvmsg found: `ran` once the request reached the kernel (false when the probe itself
/// could not run: no socket, no ring); then `result` is 0 when the request delivered the datagram and stayed armed,
/// or the kernel's -errno (-EINVAL before 6.0; also -EINVAL for a request that did not stay armed).
struct MultishotProbe {
    bool ran = false;
    int result = 0;
};
/// Arms a multishot recvmsg (kernel 6.0) on a temporary autobound socket with one datagram queued, through a
/// temporary ring with a provided-buffer ring, then cancels it. `extra_ioprio` is OR-ed into the request's receive
/// flags: tests pass a flag no kernel knows, which is how a 5.19 kernel sees IORING_RECV_MULTISHOT.
MultishotProbe probe_multishot_recvmsg(unsigned extra_ioprio) noexcept;
/// probe_multishot_recvmsg(0) ran and got -EINVAL, probed once per process: this kernel has provided-buffer rings
/// (5.19) but no multishot recvmsg (6.0), and the backend cannot receive.
bool multishot_recvmsg_refused() noexcept;

}  // namespace unixgram::detail::uring_compat
