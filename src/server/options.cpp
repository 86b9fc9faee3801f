// SPDX-License-Identifier: MIT
// ServerOptions validation and the UnnamedAddresses names.
#include "unixgram/options.hpp"

#include <stdexcept>
#include <string>

namespace unixgram {

UnnamedAddresses parse_unnamed_addresses(std::string_view text) {
    if (text == "ignore") return UnnamedAddresses::ignore;
    if (text == "warn") return UnnamedAddresses::warn;
    if (text == "handle") return UnnamedAddresses::handle;
    throw std::invalid_argument("invalid unnamed_addresses value '" + std::string(text) +
                                "' (expected ignore, warn or handle)");
}

std::string_view to_string(UnnamedAddresses value) noexcept {
    switch (value) {
        case UnnamedAddresses::ignore: return "ignore";
        case UnnamedAddresses::warn: return "warn";
        case UnnamedAddresses::handle: return "handle";
    }
    return "?";
}

void ServerOptions::validate() const {
    auto bad = [](const char* field, const std::string& value, const std::string& why) {
        throw std::invalid_argument(std::string("ServerOptions::") + field + " = " + value + ": " + why);
    };
    if (mode && (*mode & ~07777u) != 0) bad("mode", std::to_string(*mode), "only permission bits (07777) are allowed");
    if (shards == 0) bad("shards", "0", "must be at least 1");
    if (shards > 1024) bad("shards", std::to_string(shards), "must be at most 1024");
    if (dedicated_receiver && shards < 2)
        bad("dedicated_receiver", "true", "needs at least 2 shards (shards = " + std::to_string(shards) + ")");
    if (max_datagram_size == 0 || max_datagram_size > (std::size_t{1} << 24))
        bad("max_datagram_size", std::to_string(max_datagram_size), "must be between 1 and 16 MiB");
    if (max_queued_datagrams == 0) bad("max_queued_datagrams", "0", "must be at least 1");
    if (max_queued_bytes == 0) bad("max_queued_bytes", "0", "must be at least 1");
    // Below max_queued_bytes is allowed: the server then pushes back on senders before any client reaches its
    // own cap, so nothing is dropped for a full queue (and one busy client holds up the others' reads).
    if (max_total_queued_bytes == 0) bad("max_total_queued_bytes", "0", "must be at least 1");
    if (send_timeout.count() < 0) bad("send_timeout", std::to_string(send_timeout.count()) + " ms", "must not be negative");
    if (send_buffer_size > (std::size_t{1} << 30))
        bad("send_buffer_size", std::to_string(send_buffer_size), "must be at most 1 GiB");
}

}  // namespace unixgram
