// SPDX-License-Identifier: MIT
// Shared by the lifecycle contract tests: a server the test drives itself, ask(), a socket-file check, a stopwatch.
#pragma once

#include <sys/stat.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "contract/harness.hpp"

namespace unixgram::testing {

using TextUnixServer = UnixDatagramServer<std::string, std::string, TextProtocol>;
using TextHandler = DatagramRequestHandler<std::string, std::string>;

/// A text server that is constructed but not started, logging into a CaptureSink; closed (which
/// stops it first) on destruction. The tests drive its lifecycle themselves.
class IdleServer {
public:
    explicit IdleServer(TextHandler& handler, std::optional<UnixAddress> address = std::nullopt,
                        ServerOptions options = {}) {
        auto [log, sink] = capturing_logger();
        sink_ = sink;
        options.logger = log;
        path_ = dir_.file("server.sock");
        server_ = std::make_unique<TextUnixServer>(address ? *address : UnixAddress::pathname(path_), TextProtocol{},
                                                   handler, options);
    }
    ~IdleServer() { server_->close(); }

    TextUnixServer& server() { return *server_; }
    /// The pathname the server binds when no address was given.
    const std::string& path() const { return path_; }
    CaptureSink& log() { return *sink_; }
    /// A client bound to a fresh pathname in this server's temp dir.
    RawClient client() {
        return RawClient(UnixAddress::pathname(dir_.file("c" + std::to_string(++clients_) + ".sock")));
    }

private:
    TempDir dir_;
    std::string path_;
    int clients_ = 0;
    std::shared_ptr<CaptureSink> sink_;
    std::unique_ptr<TextUnixServer> server_;
};

inline std::optional<std::string> ask(RawClient& client, const UnixAddress& to, std::string_view request) {
    client.send(to, request);
    return client.recv();
}

inline bool is_socket_file(const std::string& path) {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace unixgram::testing
