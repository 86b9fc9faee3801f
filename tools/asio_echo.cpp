// SPDX-License-Identifier: MIT
// unixgram-asio-echo: the benchmark's "what a C++ user writes today" — an echo server on Boost.Asio.
//
//   unixgram-asio-echo --path PATH        (PATH '@name' is an abstract name)
//
// A local::datagram_protocol::socket on one io_context run by one thread: async_receive_from, then
// async_send_to of the same bytes back to the sender, then the next receive — the shape of Asio's own UDP
// echo example. A reply that a full peer refuses waits inside Asio for the socket to turn writable, so
// nothing is dropped and replies stay in order.
//
// Prints "listening on <address>" when ready. SIGTERM or SIGINT (asio::signal_set): exit 0, socket file
// removed. Exit status 2 for a usage or setup error.

#include <unistd.h>

#include <array>
#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/datagram_protocol.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

namespace {

namespace asio = boost::asio;
using Protocol = asio::local::datagram_protocol;

[[noreturn]] void die(const std::string& message) {
    std::fprintf(stderr, "unixgram-asio-echo: %s\n", message.c_str());
    std::exit(2);
}

class EchoServer {
public:
    EchoServer(asio::io_context& io, const Protocol::endpoint& endpoint) : socket_(io, endpoint) {}

    void start() { receive(); }
    void close() { socket_.close(); }

private:
    void receive() {
        socket_.async_receive_from(asio::buffer(buffer_), sender_, [this](boost::system::error_code ec, std::size_t n) {
            if (ec == asio::error::operation_aborted) return;
            if (ec) {
                std::fprintf(stderr, "unixgram-asio-echo: receive: %s\n", ec.message().c_str());
                receive();
                return;
            }
            send(n);
        });
    }

    void send(std::size_t n) {
        socket_.async_send_to(asio::buffer(buffer_.data(), n), sender_, [this](boost::system::error_code ec, std::size_t) {
            if (ec == asio::error::operation_aborted) return;
            // A vanished or unnamed peer: nobody to keep the reply for.
            receive();
        });
    }

    Protocol::socket socket_;
    Protocol::endpoint sender_;
    std::array<char, 65536> buffer_{};
};

std::string parse_path(int argc, char** argv) {
    const char* usage = "usage: unixgram-asio-echo --path PATH   ('@name' for an abstract name)\n";
    std::string path;
    bool have_path = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            std::fputs(usage, stdout);
            std::exit(0);
        }
        if (arg.starts_with("--path=")) {
            path = arg.substr(7);
        } else if (arg == "--path" && i + 1 < argc) {
            path = argv[++i];
        } else {
            std::fputs(usage, stderr);
            die("unexpected argument '" + std::string(arg) + "'");
        }
        have_path = true;
    }
    if (!have_path || path.empty() || path == "@") {
        std::fputs(usage, stderr);
        die("--path is required");
    }
    return path;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string path = parse_path(argc, argv);
    const bool abstract = path.front() == '@';
    // Asio spells an abstract name with its leading NUL.
    const std::string name = abstract ? std::string(1, '\0') + path.substr(1) : path;

    asio::io_context io(1);  // one thread: Asio may skip its locks
    try {
        EchoServer server(io, Protocol::endpoint(name));
        asio::signal_set stop(io, SIGINT, SIGTERM);
        stop.async_wait([&](boost::system::error_code, int) {
            server.close();
            if (!abstract) ::unlink(path.c_str());
            io.stop();
        });
        server.start();
        std::printf("listening on %s\n", path.c_str());
        std::fflush(stdout);
        io.run();
    } catch (const std::exception& e) {
        die(path + ": " + e.what());
    }
    return 0;
}
