// SPDX-License-Identifier: MIT
// SendBatch: a loop turn's replies in a backend, in order, until they go to the kernel together.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "io/datagram.hpp"

namespace unixgram::detail {

/// A reply the shard sends early (ServerOptions::early_replies) is taken out and leaves an empty slot.
class SendBatch {
public:
    void reserve(std::size_t n) { ops_.reserve(n); }
    bool empty() const noexcept { return ops_.empty(); }

    void push(SendOp* op) {
        op->queued = true;
        op->queue_index = static_cast<std::uint32_t>(ops_.size());
        ops_.push_back(op);
    }
    /// Takes a queued op out of the batch.
    void remove(SendOp* op) noexcept {
        ops_[op->queue_index] = nullptr;
        op->queued = false;
    }
    /// Moves the ops still queued, in order, into `out` (emptied first) and empties the batch; from then on
    /// they belong to the kernel. Pushes made while `out` is being sent start a new batch.
    void take(std::vector<SendOp*>& out) noexcept {
        out.clear();
        out.swap(ops_);
        std::size_t kept = 0;
        for (SendOp* op : out) {
            if (op == nullptr) continue;
            op->queued = false;
            out[kept++] = op;
        }
        out.resize(kept);
    }

private:
    std::vector<SendOp*> ops_;
};

}  // namespace unixgram::detail
