// SPDX-License-Identifier: MIT
// ClientTable: a shard's clients by address — open addressing over (hash, ClientState*) slots (DESIGN §4).
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>

#include "server/client_state.hpp"
#include "unixgram/address.hpp"

namespace unixgram::detail {

/// Whether the `n` bytes at `a` and `b` are equal: inline, 8 bytes a step. Sender names are short (an
/// autobound name is 8 bytes, a path a few dozen), where a call to memcmp costs more than the compare.
inline bool same_bytes(const void* a, const void* b, std::size_t n) noexcept {
    const auto* p = static_cast<const unsigned char*>(a);
    const auto* q = static_cast<const unsigned char*>(b);
    for (; n >= 8; n -= 8, p += 8, q += 8) {
        std::uint64_t x, y;
        std::memcpy(&x, p, 8);
        std::memcpy(&y, q, 8);
        if (x != y) return false;
    }
    for (; n > 0; --n, ++p, ++q)
        if (*p != *q) return false;
    return true;
}

/// A received datagram's sender name as the kernel wrote it, with its hash (UnixAddress::hash_of).
struct SenderName {
    const void* bytes;
    socklen_t length;
    std::size_t hash;

    static SenderName of(const void* name, socklen_t length) noexcept {
        if (name == nullptr || length <= sizeof(sa_family_t)) {
            static const UnixAddress unnamed;
            return {&unnamed.raw(), unnamed.length(), unnamed.hash()};
        }
        if (length > sizeof(sockaddr_un)) length = sizeof(sockaddr_un);
        return {name, length, UnixAddress::hash_of(name, length)};
    }
    bool is_unnamed() const noexcept { return length <= sizeof(sa_family_t); }
    UnixAddress address() const noexcept { return UnixAddress::from_sockaddr(bytes, length); }
};

/// Linear probing over 16-byte slots that keep each client's full hash, so a probe compares names only
/// on a hash match, and a hit goes from the slot straight to the ClientState the dispatch needs next
/// (no node in between). At most half full; erasing shifts the following entries back (no tombstones).
/// The table does not own the ClientStates.
class ClientTable {
public:
    ClientTable() { rebuild(kInitialSlots); }

    std::size_t size() const noexcept { return size_; }

    ClientState* find(const SenderName& s) const noexcept {
        for (std::size_t i = s.hash & mask_;; i = (i + 1) & mask_) {
            const Slot& slot = slots_[i];
            if (slot.state == nullptr) return nullptr;
            if (slot.hash == s.hash && matches(slot.state->address, s)) return slot.state;
        }
    }

    /// Adds `c` (not present) under `hash` == c->address.hash(). Throws std::bad_alloc when growing fails,
    /// leaving the table as it was.
    void insert(ClientState* c, std::size_t hash) {
        if ((size_ + 1) * 2 > mask_ + 1) rebuild((mask_ + 1) * 2);
        place(c, hash);
        ++size_;
    }

    /// Removes `c`, stored under `hash`; does nothing if it is not in the table.
    void erase(const ClientState* c, std::size_t hash) noexcept {
        std::size_t hole = hash & mask_;
        while (slots_[hole].state != c) {
            if (slots_[hole].state == nullptr) return;
            hole = (hole + 1) & mask_;
        }
        // Knuth's algorithm R: move back every following entry whose home is not in (hole, next].
        for (std::size_t next = (hole + 1) & mask_; slots_[next].state != nullptr; next = (next + 1) & mask_) {
            const std::size_t home = slots_[next].hash & mask_;
            const bool stays = hole <= next ? (hole < home && home <= next) : (hole < home || home <= next);
            if (stays) continue;
            slots_[hole] = slots_[next];
            hole = next;
        }
        slots_[hole] = Slot{};
        --size_;
    }

    /// Calls f(ClientState*) for every client; f must not change the table.
    template <class F>
    void for_each(F&& f) const {
        for (std::size_t i = 0; i <= mask_; ++i)
            if (slots_[i].state != nullptr) f(slots_[i].state);
    }

    /// Forgets every client (frees no ClientState); keeps the slots.
    void clear() noexcept {
        for (std::size_t i = 0; i <= mask_; ++i) slots_[i] = Slot{};
        size_ = 0;
    }

private:
    struct Slot {
        std::size_t hash = 0;
        ClientState* state = nullptr;
    };
    static constexpr std::size_t kInitialSlots = 64;

    static bool matches(const UnixAddress& a, const SenderName& s) noexcept {
        return a.length() == s.length && same_bytes(&a.raw(), s.bytes, s.length);
    }

    void place(ClientState* c, std::size_t hash) noexcept {
        std::size_t i = hash & mask_;
        while (slots_[i].state != nullptr) i = (i + 1) & mask_;
        slots_[i] = Slot{hash, c};
    }

    void rebuild(std::size_t slot_count) {
        auto fresh = std::make_unique<Slot[]>(slot_count);  // may throw: nothing changed yet
        std::unique_ptr<Slot[]> old = std::exchange(slots_, std::move(fresh));
        const std::size_t old_count = old != nullptr ? mask_ + 1 : 0;
        mask_ = slot_count - 1;
        for (std::size_t i = 0; i < old_count; ++i)
            if (old[i].state != nullptr) place(old[i].state, old[i].hash);
    }

    std::unique_ptr<Slot[]> slots_;
    std::size_t mask_ = 0;
    std::size_t size_ = 0;
};

}  // namespace unixgram::detail
