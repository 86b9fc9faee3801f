// SPDX-License-Identifier: MIT
// UnixAddress construction, parsing and printing.
#include "unixgram/address.hpp"

#include <cstddef>
#include <cstdint>
#include <stdexcept>

namespace unixgram {

namespace {
constexpr socklen_t kHeader = offsetof(sockaddr_un, sun_path);

std::string quoted(std::string_view s) {
    std::string out = "'";
    for (unsigned char c : s) {
        if (c >= 0x20 && c < 0x7f) {
            out += static_cast<char>(c);
        } else {
            static const char* hex = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out + "'";
}
}  // namespace

UnixAddress UnixAddress::pathname(std::string_view path) {
    if (path.empty()) throw std::invalid_argument("unix socket path must not be empty");
    if (path.find('\0') != std::string_view::npos)
        throw std::invalid_argument("unix socket path " + quoted(path) + " contains a NUL byte");
    if (path.size() > kMaxNameLength)
        throw std::invalid_argument("unix socket path " + quoted(path) + " is " + std::to_string(path.size()) +
                                    " bytes long; the limit is " + std::to_string(kMaxNameLength));
    UnixAddress a;
    std::memcpy(a.addr_.sun_path, path.data(), path.size());
    a.length_ = static_cast<socklen_t>(kHeader + path.size() + 1);  // what the kernel reports
    return a;
}

UnixAddress UnixAddress::abstract(std::string_view name) {
    if (name.size() > kMaxNameLength)
        throw std::invalid_argument("abstract socket name " + quoted(name) + " is " + std::to_string(name.size()) +
                                    " bytes long; the limit is " + std::to_string(kMaxNameLength));
    UnixAddress a;
    std::memcpy(a.addr_.sun_path + 1, name.data(), name.size());
    a.length_ = static_cast<socklen_t>(kHeader + 1 + name.size());
    return a;
}

UnixAddress UnixAddress::parse(std::string_view text) {
    if (text.empty()) return autobind();
    if (text.front() == '@') return abstract(text.substr(1));
    return pathname(text);
}

UnixAddress UnixAddress::from_sockaddr(const void* addr, socklen_t length) noexcept {
    UnixAddress a;
    if (addr == nullptr || length <= kHeader) return a;
    if (length > sizeof(sockaddr_un)) length = sizeof(sockaddr_un);
    std::memcpy(&a.addr_, addr, length);
    a.addr_.sun_family = AF_UNIX;
    a.length_ = length;
    return a;
}

UnixAddress::Kind UnixAddress::kind() const noexcept {
    if (length_ <= kHeader) return Kind::unnamed;
    return addr_.sun_path[0] == '\0' ? Kind::abstract : Kind::pathname;
}

std::string_view UnixAddress::name() const noexcept {
    switch (kind()) {
        case Kind::unnamed: return {};
        case Kind::abstract: return {addr_.sun_path + 1, static_cast<std::size_t>(length_ - kHeader - 1)};
        case Kind::pathname: {
            std::size_t n = length_ - kHeader;
            std::string_view s(addr_.sun_path, n);
            auto nul = s.find('\0');
            return nul == std::string_view::npos ? s : s.substr(0, nul);
        }
    }
    return {};
}

std::string UnixAddress::to_string() const {
    switch (kind()) {
        case Kind::unnamed: return "<unnamed>";
        case Kind::pathname: return std::string(name());
        case Kind::abstract: {
            std::string out = "@";
            for (char c : name()) out += (c == '\0') ? '@' : c;
            return out;
        }
    }
    return {};
}

namespace {
// Word-at-a-time multiply-xorshift: a pathname is 20-60 bytes, and a byte-serial FNV loop cost about as
// much as the rest of the client-table lookup.
std::size_t hash_bytes(const unsigned char* p, std::size_t n) noexcept {
    constexpr std::uint64_t kMul = 0x9fb21c651e98df25ull;
    std::uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * kMul);
    while (n >= 8) {
        std::uint64_t w;
        std::memcpy(&w, p, 8);
        h = (h ^ w) * kMul;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    if (n > 0) {
        std::uint64_t w = 0;
        std::memcpy(&w, p, n);
        h = (h ^ w) * kMul;
        h ^= h >> 29;
    }
    h *= kMul;
    return static_cast<std::size_t>(h ^ (h >> 32));
}
}  // namespace

std::size_t UnixAddress::hash() const noexcept {
    return hash_bytes(reinterpret_cast<const unsigned char*>(&addr_), length_);
}

std::size_t UnixAddress::hash_of(const void* addr, socklen_t length) noexcept {
    if (addr == nullptr || length <= kHeader) return UnixAddress().hash();
    if (length > sizeof(sockaddr_un)) length = sizeof(sockaddr_un);
    return hash_bytes(static_cast<const unsigned char*>(addr), length);
}

}  // namespace unixgram
