// SPDX-License-Identifier: MIT
// unixgram-echo: the demo server — echoes every datagram back to its sender, unchanged and in order.
//
//   unixgram-echo --path PATH [--mode OCTAL] [--unnamed ignore|warn|handle] [--shards N [--dedicated-receiver]]
//                 [--log-level LEVEL] [--batch-all-replies] [--post] [--max-total-queued-bytes BYTES]
//
// PATH "@name" is an abstract name, "" autobinds. Prints "listening on <address>" on stdout once the
// socket answers; SIGINT/SIGTERM stop it (exit 0, socket file removed if still ours).
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "unixgram/raw_protocol.hpp"
#include "unixgram/server.hpp"

namespace {

// PooledBytes: each request's copy comes from the loop thread's recycling pool, so serving allocates nothing.
class EchoHandler : public unixgram::DatagramRequestHandler<unixgram::PooledBytes, unixgram::PooledBytes> {
public:
    EchoHandler(spdlog::logger& log, bool post) : log_(log), post_(post) {}

    unixgram::Session<unixgram::PooledBytes> handle(unixgram::Client<unixgram::PooledBytes>& client) override {
        unixgram::PooledBytes request = co_yield unixgram::recv();
        try {
            if (post_) {
                // --post: the reply leaves with the loop turn's batch, nobody waits for it; the server counts
                // and logs what the kernel refuses (ServerStats::send_errors, send_timeouts).
                client.post_packet(request);
            } else {
                co_await client.send_packet(request);
            }
        } catch (const std::system_error& e) {  // peer gone, unnamed peer: not the server's fault
            log_.warn("could not reply to {}: {}", client.peer_name().to_string(), e.what());
        } catch (const unixgram::TimeoutError& e) {
            log_.warn("could not reply to {}: {}", client.peer_name().to_string(), e.what());
        }
    }

private:
    spdlog::logger& log_;
    bool post_;
};

[[noreturn]] void die(const std::string& message) {
    std::fprintf(stderr, "unixgram-echo: error: %s\n", message.c_str());
    std::exit(2);
}

mode_t parse_mode(const std::string& text) {
    if (text.empty() || text.size() > 5 || text.find_first_not_of("01234567") != std::string::npos)
        die("invalid --mode value '" + text + "': expected an octal number such as 0660");
    const unsigned long v = std::strtoul(text.c_str(), nullptr, 8);
    if (v > 07777) die("invalid --mode value '" + text + "': only permission bits (up to 07777) are allowed");
    return static_cast<mode_t>(v);
}

}  // namespace

int main(int argc, char** argv) {
    std::string path;
    std::string mode_text;
    std::string unnamed_text = "ignore";
    unsigned shards = 1;
    std::string level_text = "info";
    std::size_t max_total_queued_bytes = unixgram::ServerOptions{}.max_total_queued_bytes;
    bool batch_all_replies = false;
    bool post = false;
    bool dedicated_receiver = false;

    CLI::App app{"unixgram-echo: echo server on a Unix datagram socket"};
    app.add_option("--path", path, "socket path; @name for an abstract name, \"\" to autobind")->required();
    app.add_option("--mode", mode_text, "permissions of the socket file, in octal (e.g. 0660)");
    app.add_option("--unnamed", unnamed_text, "datagrams from unbound senders: ignore, warn or handle");
    app.add_option("--shards", shards, "worker shards (N >= 1)");
    app.add_option("--log-level", level_text, "trace, debug, info, warn, error, critical or off");
    app.add_option("--max-total-queued-bytes", max_total_queued_bytes,
                   "bytes queued in the server for all clients before it stops reading (kernel backpressure: "
                   "nothing is dropped)")
        ->check(CLI::Validator(
            [](const std::string& text) {
                // On the text, before conversion: "-5" would otherwise wrap around to a huge size_t.
                const bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
                return digits && text.find_first_not_of('0') != std::string::npos
                           ? std::string()
                           : "expected a positive whole number of bytes, got '" + text + "'";
            },
            "BYTES"));
    app.add_flag("--post", post,
                 "reply with Client::post_packet (not awaited: a client's run of datagrams is answered in one "
                 "turn, its replies sent together) instead of co_await send_packet");
    app.add_flag("--batch-all-replies", batch_all_replies,
                 "send every reply with the loop turn's batch, even one that holds up the same client's next "
                 "datagram (ServerOptions::early_replies = false)");
    app.add_flag("--dedicated-receiver", dedicated_receiver,
                 "with --shards N >= 2: shard 0 only reads the socket, clients are served by shards 1..N-1 "
                 "(ServerOptions::dedicated_receiver)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        die(e.what());
    }

    unixgram::ServerOptions options;
    std::optional<unixgram::UnixAddress> address;
    try {
        address = unixgram::UnixAddress::parse(path);
        if (!mode_text.empty()) options.mode = parse_mode(mode_text);
        options.unnamed_addresses = unixgram::parse_unnamed_addresses(unnamed_text);
        if (shards == 0) die("invalid --shards value '0': must be at least 1");
        options.shards = shards;
        options.max_total_queued_bytes = max_total_queued_bytes;
        options.early_replies = !batch_all_replies;
        options.dedicated_receiver = dedicated_receiver;
    } catch (const std::invalid_argument& e) {
        die(e.what());
    }
    const auto level = spdlog::level::from_str(level_text);
    if (level == spdlog::level::off && level_text != "off")
        die("invalid --log-level value '" + level_text + "': expected trace, debug, info, warn, error, critical or off");

    auto log = spdlog::stderr_color_mt("unixgram-echo");
    log->set_level(level);
    options.logger = log;
    // A reader that pauses keeps its replies (in order) for up to 30 s; SIGTERM still stops at once.
    options.send_timeout = std::chrono::seconds(30);

    // Block the stop signals in every thread; the main thread waits for them with sigwait.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    EchoHandler handler(*log, post);
    try {
        unixgram::UnixDatagramServer server(*address, unixgram::PooledRawProtocol{}, handler, options);
        server.start();
        std::printf("listening on %s\n", server.address().to_string().c_str());
        std::fflush(stdout);
        int sig = 0;
        sigwait(&stop_signals, &sig);
        log->info("received {}, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
        server.stop();
        server.close();
        const unixgram::ServerStats st = server.stats();
        log->info("served: {} datagrams received, {} replies sent, {} send retries (full client queues), {} send errors, "
                  "{} dropped, {} receive pauses, {} replies sent early, {} receive-buffer shortages (io_uring "
                  "ENOBUFS), {} failed reads",
                  st.datagrams_received, st.datagrams_sent, st.send_retries, st.send_errors, st.dropped_total(),
                  st.receive_pauses, st.replies_sent_early, st.enobufs, st.receive_errors);
    } catch (const std::exception& e) {
        die(e.what());
    }
    return 0;
}
