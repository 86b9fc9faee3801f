// SPDX-License-Identifier: MIT
// UnixAddress: an AF_UNIX socket address (pathname, abstract, unnamed) with raw-bytes identity.
#pragma once

/// \file
/// A `UnixAddress` is what the kernel reports for an AF_UNIX socket: a pathname (`/run/app.sock`),
/// an abstract name (Linux; first byte NUL; printed `@name`) or nothing at all (an unbound sender,
/// printed `<unnamed>`). Identity is the raw `(length, bytes)` pair the kernel returns, never a
/// NUL-terminated string, so abstract names with embedded NULs stay distinct.
///
/// Example:
/// \code
///   auto a = unixgram::UnixAddress::parse("@metrics");       // abstract
///   auto p = unixgram::UnixAddress::pathname("/run/x.sock");  // pathname
///   auto any = unixgram::UnixAddress::autobind();             // let the kernel pick (@0a1b2)
///   assert(a.kind() == unixgram::UnixAddress::Kind::abstract);
///   assert(p.to_string() == "/run/x.sock");
///   assert(any.is_unnamed());
/// \endcode

#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>

namespace unixgram {

class UnixAddress {
public:
    enum class Kind { unnamed, pathname, abstract };

    /// Longest pathname or abstract name accepted, in bytes (sun_path holds 108 with its NUL).
    static constexpr std::size_t kMaxNameLength = sizeof(sockaddr_un::sun_path) - 1;

    /// An unnamed address (an unbound socket).
    UnixAddress() noexcept { std::memset(&addr_, 0, sizeof(addr_)); addr_.sun_family = AF_UNIX; }

    /// A pathname address. Throws std::invalid_argument naming the path if it is empty, longer than
    /// kMaxNameLength bytes (never truncated) or contains a NUL byte.
    static UnixAddress pathname(std::string_view path);
    /// An abstract address; `name` excludes the leading NUL. Throws std::invalid_argument naming it
    /// if it is longer than kMaxNameLength bytes.
    static UnixAddress abstract(std::string_view name);
    /// The unnamed address.
    static UnixAddress unnamed() noexcept { return UnixAddress(); }
    /// Binding this address asks the kernel for a fresh abstract name (autobind); same value as unnamed().
    static UnixAddress autobind() noexcept { return UnixAddress(); }
    /// Parses the notation used on command lines: "" → autobind, "@name" → abstract, else a pathname.
    static UnixAddress parse(std::string_view text);
    /// Wraps what the kernel returned (recvfrom, getsockname). A length of 0 or 2 means unnamed.
    static UnixAddress from_sockaddr(const void* addr, socklen_t length) noexcept;

    Kind kind() const noexcept;
    bool is_unnamed() const noexcept { return kind() == Kind::unnamed; }
    bool is_abstract() const noexcept { return kind() == Kind::abstract; }
    bool is_pathname() const noexcept { return kind() == Kind::pathname; }

    /// The path (pathname) or the name bytes after the leading NUL (abstract); empty when unnamed.
    std::string_view name() const noexcept;
    /// "/path", "@name" (NULs shown as '@', like /proc/net/unix) or "<unnamed>".
    std::string to_string() const;

    const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&addr_); }
    socklen_t length() const noexcept { return length_; }
    const sockaddr_un& raw() const noexcept { return addr_; }

    friend bool operator==(const UnixAddress& a, const UnixAddress& b) noexcept {
        return a.length_ == b.length_ && std::memcmp(&a.addr_, &b.addr_, a.length_) == 0;
    }
    /// A hash of (length, bytes), 8 bytes per step. Equals hash_of(data(), length()).
    std::size_t hash() const noexcept;
    /// The hash() that from_sockaddr(addr, length) would have, for a name the kernel returned
    /// (sun_family AF_UNIX), without building the address.
    static std::size_t hash_of(const void* addr, socklen_t length) noexcept;

private:
    sockaddr_un addr_;
    socklen_t length_ = sizeof(sa_family_t);
};

}  // namespace unixgram

template <>
struct std::hash<unixgram::UnixAddress> {
    std::size_t operator()(const unixgram::UnixAddress& a) const noexcept { return a.hash(); }
};
