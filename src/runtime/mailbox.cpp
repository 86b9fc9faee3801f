// SPDX-License-Identifier: MIT
// Mailbox: record layout and the ring's space accounting.
#include "runtime/mailbox.hpp"

#include <bit>
#include <cstring>

namespace unixgram::detail {

/// One record: this header, then fd_count ints, the sender's name, the payload; padded to 8 bytes.
/// A header whose size is kWrap sends the reader back to the start of the ring.
struct Mailbox::Header {
    static constexpr std::uint32_t kWrap = 0xffffffffu;
    std::uint32_t size;
    std::uint32_t payload_length;
    std::uint16_t name_length;
    std::uint16_t fd_count;
    std::uint8_t has_credentials;
    std::uint8_t control_truncated;
    std::uint8_t pad[2];
    struct ucred credentials;
};

namespace {
constexpr std::size_t align8(std::size_t n) noexcept { return (n + 7) & ~std::size_t{7}; }
constexpr std::size_t kMinCapacity = std::size_t{256} << 10;
}  // namespace

std::size_t Mailbox::record_size(const RecvDatagram& d) noexcept {
    return align8(sizeof(Header) + d.fd_count * sizeof(int) + d.name_length + d.payload.size());
}

Mailbox::Mailbox(std::size_t max_datagram_size) {
    const std::size_t largest =
        align8(sizeof(Header) + kMaxFdsPerDatagram * sizeof(int) + sizeof(sockaddr_un) + max_datagram_size);
    capacity_ = std::bit_ceil(std::max(kMinCapacity, 4 * largest));
    mask_ = capacity_ - 1;
    ring_ = std::make_unique<std::byte[]>(capacity_);
}

void Mailbox::encode(const RecvDatagram& d, std::byte* out) noexcept {
    Header h{};
    h.size = static_cast<std::uint32_t>(record_size(d));
    h.payload_length = static_cast<std::uint32_t>(d.payload.size());
    h.name_length = static_cast<std::uint16_t>(d.name_length);
    h.fd_count = static_cast<std::uint16_t>(d.fd_count);
    h.has_credentials = d.has_credentials ? 1 : 0;
    h.control_truncated = d.control_truncated ? 1 : 0;
    h.credentials = d.credentials;
    std::memcpy(out, &h, sizeof h);
    std::byte* p = out + sizeof h;
    if (d.fd_count > 0) {
        std::memcpy(p, d.fds, d.fd_count * sizeof(int));
        p += d.fd_count * sizeof(int);
    }
    std::memcpy(p, d.name, d.name_length);
    p += d.name_length;
    if (!d.payload.empty()) std::memcpy(p, d.payload.data(), d.payload.size());
}

std::byte* Mailbox::reserve(std::size_t size) noexcept {
    const std::size_t pos = local_tail_ & mask_;
    const std::size_t to_end = capacity_ - pos;
    const std::size_t needed = size <= to_end ? size : to_end + size;  // a wrap skips the end
    if (needed > capacity_) return nullptr;
    if (local_tail_ + needed - cached_head_ > capacity_) {
        cached_head_ = head_.load(std::memory_order_acquire);
        if (local_tail_ + needed - cached_head_ > capacity_) return nullptr;
    }
    if (size > to_end) {
        Header wrap{};
        wrap.size = Header::kWrap;
        std::memcpy(ring_.get() + pos, &wrap.size, sizeof wrap.size);  // to_end >= 8: records are aligned
        local_tail_ += to_end;
    }
    std::byte* out = ring_.get() + (local_tail_ & mask_);
    local_tail_ += size;
    return out;
}

bool Mailbox::push(const RecvDatagram& d) noexcept {
    std::byte* out = reserve(record_size(d));
    if (out == nullptr) return false;
    encode(d, out);
    return true;
}

bool Mailbox::push_encoded(std::span<const std::byte> record) noexcept {
    std::byte* out = reserve(record.size());
    if (out == nullptr) return false;
    std::memcpy(out, record.data(), record.size());
    return true;
}

std::size_t Mailbox::decode(const std::byte* p, RecvDatagram& d) noexcept {
    Header h;
    std::memcpy(&h, p, sizeof h);
    p += sizeof h;
    d.fd_count = h.fd_count;
    if (h.fd_count > 0) {
        std::memcpy(d.fds, p, h.fd_count * sizeof(int));
        p += h.fd_count * sizeof(int);
    }
    d.name = p;
    d.name_length = h.name_length;
    p += h.name_length;
    d.payload = {p, h.payload_length};
    d.real_length = h.payload_length;
    d.truncated = false;
    d.control_truncated = h.control_truncated != 0;
    d.has_credentials = h.has_credentials != 0;
    d.credentials = h.credentials;
    return h.size;
}

bool Mailbox::read_record(std::size_t pos, RecvDatagram& d) noexcept {
    const std::byte* p = ring_.get() + pos;
    std::uint32_t size;
    std::memcpy(&size, p, sizeof size);
    if (size == Header::kWrap) {
        head_local_ += capacity_ - pos;
        return false;
    }
    head_local_ += decode(p, d);
    return true;
}

}  // namespace unixgram::detail
