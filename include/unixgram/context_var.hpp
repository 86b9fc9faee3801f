// SPDX-License-Identifier: MIT
// ContextVar<T>: a value per session, defaulted from what service_init set (H16).
#pragma once

/// \file
/// Like Python's `contextvars.ContextVar`: values set in `service_init` become the defaults every
/// session and background task starts with; a `set()` inside a session is seen only by that
/// session run (not by other clients, nor by the same client's next session).
///
/// Example:
/// \code
///   inline unixgram::ContextVar<std::string> request_id{"none"};
///   class Tagged : public unixgram::DatagramRequestHandler<std::string, std::string> {
///   public:
///       unixgram::Task<> service_init(unixgram::ExitStack&, unixgram::Server&) override {
///           request_id.set("init");  // the value every session starts with
///           co_return;
///       }
///       unixgram::Session<std::string> handle(unixgram::Client<std::string>& client) override {
///           std::string before = request_id.get();  // "init", whatever earlier sessions set
///           std::string request = co_yield unixgram::recv();
///           request_id.set(request);                 // seen by this session only
///           co_await client.send_packet(before + " -> " + request_id.get());
///       }
///   };
/// \endcode

#include <memory>
#include <utility>

#include "unixgram/detail/engine.hpp"

namespace unixgram {

template <class T>
class ContextVar {
public:
    explicit ContextVar(T default_value = T{}) : default_(std::move(default_value)) {}
    ContextVar(const ContextVar&) = delete;
    ContextVar& operator=(const ContextVar&) = delete;

    /// The value in the current session or task; the default outside the server's loop.
    T get() const {
        if (const auto* ctx = detail::current_context(); ctx != nullptr) {
            if (const auto& vars = ctx->current_vars(); vars) {
                if (auto it = vars->find(this); it != vars->end()) return *static_cast<const T*>(it->second.get());
            }
        }
        return default_;
    }

    /// Sets the value for the current session or task (allocates: copy-on-write). Throws
    /// std::logic_error outside a server's loop.
    void set(T value) {
        auto& ctx = detail::require_context("ContextVar::set()");
        const auto& current = ctx.current_vars();
        auto map = current ? std::make_shared<detail::ContextMap>(*current) : std::make_shared<detail::ContextMap>();
        (*map)[this] = std::make_shared<const T>(std::move(value));
        ctx.vars = std::move(map);
    }

private:
    T default_;
};

}  // namespace unixgram
