// SPDX-License-Identifier: MIT
// liburing 2.3 compatibility helpers (provided-buffer ring setup and teardown).
#include "io/uring/compat.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

namespace unixgram::detail::uring_compat {

io_uring_buf_ring* setup_buf_ring(io_uring* ring, unsigned entries, int bgid, int* err) noexcept {
    const std::size_t size = entries * sizeof(io_uring_buf);
    void* mem = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) {
        *err = -errno;
        return nullptr;
    }
    auto* br = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_ring_init(br);
    io_uring_buf_reg reg;
    std::memset(&reg, 0, sizeof reg);
    reg.ring_addr = reinterpret_cast<unsigned long>(br);
    reg.ring_entries = entries;
    reg.bgid = static_cast<__u16>(bgid);
    if (int r = io_uring_register_buf_ring(ring, &reg, 0); r < 0) {
        ::munmap(mem, size);
        *err = r;
        return nullptr;
    }
    return br;
}

void free_buf_ring(io_uring* ring, io_uring_buf_ring* br, unsigned entries, int bgid) noexcept {
    if (br == nullptr) return;
    io_uring_unregister_buf_ring(ring, bgid);
    ::munmap(br, entries * sizeof(io_uring_buf));
}

}  // namespace unixgram::detail::uring_compat
