// SPDX-License-Identifier: MIT
// Shared by the sharding contract tests: TSan-aware bounds, a shard-count option, a thread log, a guarded stop().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "contract/harness.hpp"

#if defined(__SANITIZE_THREAD__)
#define UNIXGRAM_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNIXGRAM_TEST_TSAN 1
#endif
#endif

namespace unixgram::testing {

using Text = RunningServer<std::string, std::string, TextProtocol>;
using TextClient = Client<std::string>;
using ThreadId = std::thread::id;

#ifdef UNIXGRAM_TEST_TSAN
inline constexpr bool kTsan = true;
#else
inline constexpr bool kTsan = false;
#endif
// ThreadSanitizer slows everything several times: fewer datagrams, longer guards (failure guards, never waited out).
inline constexpr int kEchoDatagramsPerClient = kTsan ? 2000 : 5000;
inline constexpr std::chrono::milliseconds kGuard = kTsan ? 30000ms : 10000ms;

inline ServerOptions shards(unsigned n) {
    ServerOptions o;
    o.shards = n;
    return o;
}

inline std::vector<RawClient> make_clients(Text& srv, int n) {
    std::vector<RawClient> clients;
    clients.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) clients.push_back(srv.client());
    return clients;
}

/// The thread ids handlers ran on, per client address; written on the shards, read by the test.
class ThreadLog {
public:
    void record(const std::string& client) {
        std::lock_guard lock(mutex_);
        by_client_[client].insert(std::this_thread::get_id());
    }
    std::map<std::string, std::set<ThreadId>> by_client() const {
        std::lock_guard lock(mutex_);
        return by_client_;
    }
    std::set<ThreadId> all() const {
        std::lock_guard lock(mutex_);
        std::set<ThreadId> ids;
        for (auto& [_, s] : by_client_) ids.insert(s.begin(), s.end());
        return ids;
    }

private:
    mutable std::mutex mutex_;
    std::map<std::string, std::set<ThreadId>> by_client_;
};

/// Stops the server from this thread; a stop() that does not return within the guard ends the
/// test binary with a message instead of hanging until meson's timeout.
inline void stop_within_guard(Server& server, const char* what) {
    std::atomic<bool> done{false};
    std::thread guard([&] {
        if (!wait_until([&] { return done.load(); }, 3 * kGuard)) {
            std::fprintf(stderr, "FATAL: server.stop() did not return within %lld ms (%s)\n",
                         static_cast<long long>((3 * kGuard).count()), what);
            std::abort();
        }
    });
    server.stop();
    done = true;
    guard.join();
}

}  // namespace unixgram::testing
