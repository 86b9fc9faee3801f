// SPDX-License-Identifier: MIT
// unixgram-bench: the benchmark's load generator — verified echo load, latency percentiles, server CPU per datagram.
//
// Usage:
//   unixgram-bench --path PATH [--clients 16] [--window 32] [--size 64] [--duration 3] [--warmup 1]
//                  [--server-pid PID] [--threads 1] [--rate 0] [--connect] [--json]
//
// Why it is built the way it is:
// - Every client is its own autobound socket that is NOT connected and sends with sendmmsg to the server's
//   address. The kernel skips the receive-queue limit for a sender that its receiver is connected to, so a
//   connected client would let the server's replies pile up without bound; unconnected, the server meets the
//   real per-peer limit (net.unix.max_dgram_qlen + 1 datagrams) and has to cope with EAGAIN on its replies.
// - All clients share the server's one small queue, so an EAGAIN on any send means the queue is full for every
//   client: the thread stops sending and retries, oldest waiting client first, once replies have arrived or
//   after kRetryNs. Waiting for EPOLLOUT cannot help: an unconnected socket's writability tracks only its own
//   send buffer.
// - A datagram carries [sequence number u64][client number u64][pattern], the pattern depending on both, so a
//   reply that is truncated, altered, delivered to the wrong client, duplicated or out of order is caught.
//   Send times stay here (a ring per client indexed by sequence % window), so every reply byte is checked.
// - --connect connects every client to the server instead. A connected send skips the kernel's lookup of the
//   server's name. With 1000 clients × 1, where every send carries one datagram, that lookup was enough to make
//   this tool's one CPU, not the server, set the rate (against the baseline echo on 2 vCPUs: 117,000–141,000
//   datagrams/s unconnected, 157,000–186,000 connected, three runs each). The kernel also lifts the per-peer
//   queue limit on the server's replies to a client connected to it; with --window 1 that limit is never
//   reached (one reply at a time), so the server does the same work either way. With a larger window the server
//   would no longer meet the limit at all: leave it off there.
// - The load's own CPU time (all of this process, over the measured interval) is reported as load_busy, the
//   share of the load threads' CPUs: near 100 % means this tool, not the server, may have set the rate.
// - --rate R paces the sends (a credit of R datagrams/s, split between the threads, at most 1 ms of it at
//   once) within the same windows, so servers can be compared at the same load rather than each at its own
//   maximum.
// - Latency goes into a log-bucketed histogram (HdrHistogram's layout): constant memory, no per-sample vector.
// - Phases by the clock: warmup (replies checked, not counted), measure (counted; the server's utime+stime is
//   read at both ends), drain (no more sends; what has not come back within kDrainNs is lost).
//
// Output: one line on stdout, or with --json one JSON object on stdout and the line on stderr. A progress line
// goes to stderr once a second when stderr is a terminal.
// Exit status: 0 when every reply was right and none was lost, 1 otherwise, 2 for a usage or setup error.

#include <CLI/CLI.hpp>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_load.hpp"

namespace {

using namespace unixgram::bench;

/// Command line (CLI11). A bad value exits 2 with one line naming it.
Options parse_options(int argc, char** argv) {
    Options o;
    pid_t server_pid = 0;
    CLI::App app{"unixgram-bench: verified echo load with latency and server CPU per datagram"};
    app.add_option("--path", o.path, "the echo server's address ('@name' for an abstract name)")->required();
    app.add_option("--clients", o.clients, "client sockets, each autobound (and unconnected, unless --connect)")
        ->check(CLI::Range(1u, 100000u));
    app.add_option("--window", o.window, "datagrams in flight per client; 1 is ping-pong")->check(CLI::Range(1u, 65536u));
    app.add_option("--size", o.size, "datagram size in bytes")->check(CLI::Range(kHeaderSize, kMaxDatagram));
    app.add_option("--duration", o.duration_s, "seconds measured")->check(CLI::Range(1e-3, 86400.0));
    app.add_option("--warmup", o.warmup_s, "seconds of load before the measurement")->check(CLI::Range(0.0, 86400.0));
    auto* pid = app.add_option("--server-pid", server_pid, "the server's process: report its CPU time per datagram")
                    ->check(CLI::Range(1, 1 << 30));
    app.add_option("--threads", o.threads, "load threads, the clients split among them")->check(CLI::Range(1u, 256u));
    app.add_option("--rate", o.rate, "pace the sends to this many datagrams/s in total (0: as fast as the windows allow)")
        ->check(CLI::Range(0.0, 1e9));
    app.add_flag("--connect", o.connect,
                 "connect each client to the server (cheaper sends; lifts the server's per-client reply queue limit, "
                 "so meant for --window 1)");
    app.add_flag("--json", o.json, "print the result as one JSON object on stdout");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        std::exit(app.exit(e));
    } catch (const CLI::ParseError& e) {
        die(e.what());
    }
    if (pid->count() > 0) o.server_pid = server_pid;
    if (o.threads > o.clients) die("--threads " + std::to_string(o.threads) + " is more than --clients");
    return o;
}

Address server_address(const std::string& text) {
    Address a;
    a.addr.sun_family = AF_UNIX;
    if (text.empty() || text == "@") die("--path: an address is required (empty or bare '@' given)");
    if (text.size() > sizeof(a.addr.sun_path) - 1) {
        die("--path: '" + text + "' is longer than " + std::to_string(sizeof(a.addr.sun_path) - 1) + " bytes");
    }
    const bool abstract = text.front() == '@';
    std::memcpy(a.addr.sun_path + (abstract ? 1 : 0), text.data() + (abstract ? 1 : 0), text.size() - (abstract ? 1 : 0));
    a.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + text.size() + (abstract ? 0 : 1));
    return a;
}

/// The server's CPU time so far (utime + stime of all its threads, fields 14 and 15 of /proc/PID/stat).
double server_cpu_seconds(pid_t pid) {
    const std::string file = "/proc/" + std::to_string(pid) + "/stat";
    std::FILE* f = std::fopen(file.c_str(), "r");
    if (f == nullptr) die_errno("cannot read " + file + " (is the server still running?)", errno);
    char text[1024];
    const std::size_t n = std::fread(text, 1, sizeof(text) - 1, f);
    std::fclose(f);
    text[n] = '\0';
    // The command name (field 2) may hold spaces and parentheses: count fields from its last ')'.
    const char* p = std::strrchr(text, ')');
    unsigned long long utime = 0;
    unsigned long long stime = 0;
    if (p == nullptr || std::sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2) {
        die("cannot parse " + file);
    }
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// This process's CPU time so far, every thread's.
double own_cpu_seconds() {
    timespec ts{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

void sleep_until(std::uint64_t deadline) {
    const timespec ts = to_timespec(deadline);
    while (!g_stop && ::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
}

void on_signal(int) { g_stop = 1; }

std::string json_string(std::string_view text) {
    std::string out = "\"";
    for (char ch : text) {
        const auto u = static_cast<unsigned char>(ch);
        if (ch == '"' || ch == '\\') {
            out += '\\';
            out += ch;
        } else if (u < 0x20) {
            char esc[8];
            std::snprintf(esc, sizeof(esc), "\\u%04x", u);
            out += esc;
        } else {
            out += ch;
        }
    }
    return out + "\"";
}

}  // namespace

int main(int argc, char** argv) {
    const Options options = parse_options(argc, argv);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);

    // A thousand clients are a thousand descriptors: take what the hard limit allows.
    rlimit files{};
    if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &files);
    }

    const Address server = server_address(options.path);
    const Payload payload(options.size);
    Schedule schedule;
    std::vector<std::unique_ptr<LoadThread>> loads;
    for (unsigned t = 0; t < options.threads; ++t) {
        const auto first = static_cast<std::uint32_t>(std::uint64_t{options.clients} * t / options.threads);
        const auto next = static_cast<std::uint32_t>(std::uint64_t{options.clients} * (t + 1) / options.threads);
        loads.push_back(std::make_unique<LoadThread>(options, server, payload, schedule, first, next - first));
    }

    const std::uint64_t start = now_ns();
    schedule.measure_start = start + static_cast<std::uint64_t>(options.warmup_s * 1e9);
    const std::uint64_t planned_end = schedule.measure_start + static_cast<std::uint64_t>(options.duration_s * 1e9);
    schedule.measure_end.store(planned_end);
    std::vector<std::thread> threads;
    for (auto& load : loads) threads.emplace_back([&load] { load->run(); });

    auto replies = [&] {
        std::uint64_t sum = 0;
        for (const auto& load : loads) sum += load->progress();
        return sum;
    };
    const bool show_progress = ::isatty(STDERR_FILENO) == 1;
    std::uint64_t last_tick = start;
    std::uint64_t last_replies = 0;
    auto sleep_with_progress = [&](std::uint64_t deadline) {
        while (!g_stop && now_ns() < deadline) {
            const std::uint64_t tick = last_tick + 1'000'000'000u;
            sleep_until(show_progress ? std::min(tick, deadline) : deadline);
            const std::uint64_t now = now_ns();
            if (!show_progress || now < tick) continue;
            const std::uint64_t r = replies();
            std::fprintf(stderr, "unixgram-bench: %5.1f s %-7s %10.0f datagrams/s\n", static_cast<double>(now - start) / 1e9,
                         last_tick < schedule.measure_start ? "warmup" : "measure",
                         static_cast<double>(r - last_replies) * 1e9 / static_cast<double>(now - last_tick));
            last_tick = now;
            last_replies = r;
        }
    };

    sleep_with_progress(schedule.measure_start);
    const double cpu_start = options.server_pid ? server_cpu_seconds(*options.server_pid) : 0.0;
    const double load_cpu_start = own_cpu_seconds();
    sleep_with_progress(planned_end);
    std::uint64_t measure_end = planned_end;
    if (g_stop) {  // interrupted: the measurement ends now, for every thread
        measure_end = std::max(now_ns(), schedule.measure_start);
        schedule.measure_end.store(measure_end);
    }
    const double cpu_end = options.server_pid ? server_cpu_seconds(*options.server_pid) : 0.0;
    const double load_cpu_end = own_cpu_seconds();
    for (auto& t : threads) t.join();

    std::uint64_t sent = 0;
    std::uint64_t measured = 0;
    std::uint64_t lost = 0;
    std::uint64_t queue_full = 0;
    Errors errors;
    LatencyHistogram latency;
    for (const auto& load : loads) {
        sent += load->sent();
        queue_full += load->queue_full();
        measured += load->measured();
        lost += load->lost();
        errors.add(load->errors());
        latency.merge(load->latency());
    }
    const double seconds = std::max(static_cast<double>(measure_end - schedule.measure_start) / 1e9, 1e-9);
    const double rate = static_cast<double>(measured) / seconds;
    const double mb_per_s = rate * static_cast<double>(options.size) / 1e6;
    const double p50 = latency.quantile_ns(0.50) / 1e3;
    const double p99 = latency.quantile_ns(0.99) / 1e3;
    const double p999 = latency.quantile_ns(0.999) / 1e3;
    const std::optional<double> cpu_s = options.server_pid ? std::optional(cpu_end - cpu_start) : std::nullopt;
    const std::optional<double> cpu_ns_per_dgram =
        cpu_s && measured ? std::optional(*cpu_s * 1e9 / static_cast<double>(measured)) : std::nullopt;
    const bool ok = errors.total() == 0 && lost == 0 && measured > 0;
    const double load_cpu_s = load_cpu_end - load_cpu_start;
    const double load_busy = load_cpu_s / (seconds * options.threads);

    char server_part[64] = "";
    if (cpu_ns_per_dgram) std::snprintf(server_part, sizeof(server_part), ", server %.0f ns CPU/datagram", *cpu_ns_per_dgram);
    char line[512];
    std::snprintf(line, sizeof(line),
                  "unixgram-bench: %u %sclients x %u in flight, %zu B, %u thread%s: %.0f datagrams/s, %.1f MB/s, "
                  "latency p50 %.1f us p99 %.1f us p99.9 %.1f us%s, load %.0f %% busy, %llu errors, %llu lost",
                  options.clients, options.connect ? "connected " : "", options.window, options.size, options.threads,
                  options.threads == 1 ? "" : "s", rate, mb_per_s, p50, p99, p999, server_part, load_busy * 100,
                  static_cast<unsigned long long>(errors.total()),
                  static_cast<unsigned long long>(lost));
    if (options.json) {
        auto number_or_null = [](const std::optional<double>& v, const char* format) {
            if (!v) return std::string("null");
            char buf[64];
            std::snprintf(buf, sizeof(buf), format, *v);
            return std::string(buf);
        };
        std::fprintf(stderr, "%s\n", line);
        std::printf(
            "{\"tool\": \"unixgram-bench\", \"path\": %s, \"clients\": %u, \"window\": %u, \"size\": %zu, "
            "\"threads\": %u, \"connect\": %s, \"rate\": %.0f, \"duration_s\": %.3f, \"warmup_s\": %.3f, \"measured_s\": %.6f, \"sent\": %llu, "
            "\"received\": %llu, \"datagrams_per_s\": %.1f, \"mb_per_s\": %.3f, "
            "\"latency_us\": {\"samples\": %llu, \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"p999\": %.3f, "
            "\"mean\": %.3f, \"max\": %.3f}, \"server_pid\": %s, \"server_cpu_s\": %s, "
            "\"server_cpu_ns_per_datagram\": %s, \"load_cpu_s\": %.3f, \"load_busy\": %.3f, \"server_queue_full\": %llu, \"errors\": %llu, \"wrong_length\": %llu, \"wrong_content\": %llu, "
            "\"out_of_order\": %llu, \"lost\": %llu, \"ok\": %s}\n",
            json_string(options.path).c_str(), options.clients, options.window, options.size, options.threads,
            options.connect ? "true" : "false", options.rate, options.duration_s, options.warmup_s, seconds, static_cast<unsigned long long>(sent),
            static_cast<unsigned long long>(measured), rate, mb_per_s, static_cast<unsigned long long>(latency.count()),
            p50, latency.quantile_ns(0.90) / 1e3, p99, p999, latency.mean_ns() / 1e3, latency.max_ns() / 1e3,
            options.server_pid ? std::to_string(*options.server_pid).c_str() : "null",
            number_or_null(cpu_s, "%.3f").c_str(), number_or_null(cpu_ns_per_dgram, "%.1f").c_str(), load_cpu_s, load_busy,
            static_cast<unsigned long long>(queue_full),
            static_cast<unsigned long long>(errors.total()), static_cast<unsigned long long>(errors.wrong_length),
            static_cast<unsigned long long>(errors.wrong_content), static_cast<unsigned long long>(errors.out_of_order),
            static_cast<unsigned long long>(lost), ok ? "true" : "false");
    } else {
        std::printf("%s\n", line);
    }
    std::fflush(stdout);
    if (errors.total() != 0 || lost != 0) {
        std::fprintf(stderr, "unixgram-bench: %llu wrong length, %llu wrong content, %llu out of order, %llu lost (of %llu sent)\n",
                     static_cast<unsigned long long>(errors.wrong_length),
                     static_cast<unsigned long long>(errors.wrong_content),
                     static_cast<unsigned long long>(errors.out_of_order), static_cast<unsigned long long>(lost),
                     static_cast<unsigned long long>(sent));
    }
    if (measured == 0) std::fprintf(stderr, "unixgram-bench: no reply in the measured interval from '%s'\n", options.path.c_str());
    return ok ? 0 : 1;
}
