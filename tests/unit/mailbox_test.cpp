// SPDX-License-Identifier: MIT
// Mailbox (the SPSC ring between shards, DESIGN §5): record round trips, wrap-around, a full ring,
// the producer's wake-up condition, and order under a real producer and consumer thread.
#include "runtime/mailbox.hpp"

#include <gtest/gtest.h>
#include <sys/un.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace unixgram::detail {
namespace {

/// A datagram from `name` carrying `payload` (and the given fds / credentials).
struct Source {
    sockaddr_un addr{};
    socklen_t length = 0;
    std::string payload;
    RecvDatagram d;

    Source(const std::string& name, std::string body) : payload(std::move(body)) {
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path, name.data(), name.size());
        length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + 1);
        d.name = &addr;
        d.name_length = length;
        d.payload = {reinterpret_cast<const std::byte*>(payload.data()), payload.size()};
        d.real_length = payload.size();
    }
};

std::string payload_of(const RecvDatagram& d) {
    return {reinterpret_cast<const char*>(d.payload.data()), d.payload.size()};
}

std::vector<std::string> drain_all(Mailbox& box) {
    std::vector<std::string> out;
    while (!box.empty()) box.drain([&](RecvDatagram& d) { out.push_back(payload_of(d)); }, 1000);
    return out;
}

TEST(Mailbox, RecordKeepsNameFdsCredentialsAndPayload) {
    Mailbox box(1024);
    Source s("/tmp/client-a", "hello");
    s.d.fds[0] = 7;
    s.d.fds[1] = 9;
    s.d.fd_count = 2;
    s.d.has_credentials = true;
    s.d.credentials = {123, 456, 789};
    s.d.control_truncated = true;
    ASSERT_TRUE(box.push(s.d));
    EXPECT_TRUE(box.empty()) << "nothing is visible before publish()";
    EXPECT_TRUE(box.publish());
    EXPECT_FALSE(box.publish()) << "a second publish with nothing new must report nothing";

    int seen = 0;
    box.drain(
        [&](RecvDatagram& d) {
            ++seen;
            EXPECT_EQ(payload_of(d), "hello");
            ASSERT_EQ(d.name_length, s.length);
            EXPECT_EQ(std::memcmp(d.name, &s.addr, s.length), 0);
            ASSERT_EQ(d.fd_count, 2u);
            EXPECT_EQ(d.fds[0], 7);
            EXPECT_EQ(d.fds[1], 9);
            EXPECT_TRUE(d.has_credentials);
            EXPECT_EQ(d.credentials.pid, 123);
            EXPECT_EQ(d.credentials.uid, 456u);
            EXPECT_EQ(d.credentials.gid, 789u);
            EXPECT_TRUE(d.control_truncated);
            EXPECT_FALSE(d.truncated);
        },
        10);
    EXPECT_EQ(seen, 1);
    EXPECT_TRUE(box.empty());
}

TEST(Mailbox, WrapsAroundKeepingOrder) {
    Mailbox box(1024);
    // Varied sizes so that records straddle the end of the ring many times over.
    std::size_t pushed = 0, next_expected = 0;
    std::size_t total_bytes = 0;
    while (total_bytes < 10 * box.capacity()) {
        for (int k = 0; k < 50; ++k) {
            Source s("/c", std::to_string(pushed) + std::string(pushed % 997, 'x'));
            ASSERT_TRUE(box.push(s.d)) << "record " << pushed;
            total_bytes += Mailbox::record_size(s.d);
            ++pushed;
        }
        box.publish();
        for (const std::string& p : drain_all(box)) {
            ASSERT_EQ(p.substr(0, std::to_string(next_expected).size()), std::to_string(next_expected));
            ASSERT_EQ(p.size(), std::to_string(next_expected).size() + next_expected % 997);
            ++next_expected;
        }
    }
    EXPECT_EQ(next_expected, pushed);
}

TEST(Mailbox, FullRingRefusesUntilTheConsumerFreesSpace) {
    Mailbox box(1024);
    const std::string body(4000, 'p');
    std::size_t accepted = 0;
    for (;;) {
        Source s("/c", body);
        if (!box.push(s.d)) break;
        ++accepted;
        ASSERT_LT(accepted, box.capacity()) << "a bounded ring must eventually refuse";
    }
    EXPECT_GE(accepted * 4000, box.capacity() / 2);
    box.producer_waiting.store(true);
    box.publish();
    EXPECT_FALSE(box.should_wake_producer()) << "nothing was drained yet";
    std::size_t drained = 0;
    box.drain([&](RecvDatagram&) { ++drained; }, accepted / 2 + 1);
    EXPECT_TRUE(box.should_wake_producer()) << "drained below half with the producer waiting";
    EXPECT_FALSE(box.should_wake_producer()) << "the producer is woken once";
    Source s("/c", body);
    EXPECT_TRUE(box.push(s.d)) << "space freed by the consumer must be reusable";
    box.publish();
    EXPECT_EQ(drain_all(box).size(), accepted - drained + 1);
}

TEST(Mailbox, ProducerAndConsumerThreadsKeepEveryRecordInOrder) {
    Mailbox box(512);
    constexpr std::uint64_t kCount = 200000;
    std::atomic<bool> failed{false};
    std::thread consumer([&] {
        std::uint64_t expected = 0;
        while (expected < kCount && !failed.load()) {
            box.drain(
                [&](RecvDatagram& d) {
                    std::uint64_t v;
                    if (d.payload.size() < sizeof v) {
                        failed = true;
                        return;
                    }
                    std::memcpy(&v, d.payload.data(), sizeof v);
                    if (v != expected) failed = true;
                    ++expected;
                },
                64);
        }
    });
    std::string body(8 + 100, 'z');
    for (std::uint64_t i = 0; i < kCount && !failed.load(); ++i) {
        std::memcpy(body.data(), &i, sizeof i);
        body.resize(8 + (i * 37) % 300);
        Source s("/p", body);
        while (!box.push(s.d)) box.publish();  // full: make everything visible and try again
        if (i % 16 == 15) box.publish();
    }
    box.publish();
    consumer.join();
    EXPECT_FALSE(failed.load()) << "a record arrived out of order, twice, or damaged";
}

}  // namespace
}  // namespace unixgram::detail
