// SPDX-License-Identifier: MIT
// TimerHeap: an intrusive binary min-heap of TimerNodes (arm, cancel and expire without allocation).
#pragma once

#include <utility>
#include <vector>

#include "unixgram/detail/engine.hpp"

namespace unixgram::detail {

class TimerHeap {
public:
    bool empty() const noexcept { return heap_.empty(); }
    std::size_t size() const noexcept { return heap_.size(); }
    TimerNode* top() const noexcept { return heap_.front(); }

    /// May allocate when the heap grows past its largest size so far.
    void arm(TimerNode* n, Clock::time_point deadline) {
        if (n->armed()) cancel(n);
        n->deadline = deadline;
        n->heap_index = heap_.size();
        heap_.push_back(n);
        sift_up(n->heap_index);
    }

    void cancel(TimerNode* n) noexcept {
        if (!n->armed()) return;
        const std::size_t i = n->heap_index;
        const std::size_t last = heap_.size() - 1;
        n->heap_index = TimerNode::kNotArmed;
        if (i != last) {
            heap_[i] = heap_[last];
            heap_[i]->heap_index = i;
            heap_.pop_back();
            sift_down(i);
            sift_up(i);
        } else {
            heap_.pop_back();
        }
    }

    /// Removes and returns the earliest node if its deadline is at or before `now`.
    TimerNode* pop_expired(Clock::time_point now) noexcept {
        if (heap_.empty() || heap_.front()->deadline > now) return nullptr;
        TimerNode* n = heap_.front();
        cancel(n);
        return n;
    }

private:
    void swap_at(std::size_t a, std::size_t b) noexcept {
        std::swap(heap_[a], heap_[b]);
        heap_[a]->heap_index = a;
        heap_[b]->heap_index = b;
    }
    void sift_up(std::size_t i) noexcept {
        while (i > 0) {
            std::size_t parent = (i - 1) / 2;
            if (heap_[parent]->deadline <= heap_[i]->deadline) break;
            swap_at(i, parent);
            i = parent;
        }
    }
    void sift_down(std::size_t i) noexcept {
        for (;;) {
            std::size_t l = 2 * i + 1, r = l + 1, m = i;
            if (l < heap_.size() && heap_[l]->deadline < heap_[m]->deadline) m = l;
            if (r < heap_.size() && heap_[r]->deadline < heap_[m]->deadline) m = r;
            if (m == i) break;
            swap_at(i, m);
            i = m;
        }
    }

    std::vector<TimerNode*> heap_;
};

}  // namespace unixgram::detail
