// SPDX-License-Identifier: MIT
// A seccomp filter that makes one system call fail with a chosen errno for the whole process, as a kernel
// without it or a container's seccomp profile would. It cannot be undone: a test that uses it runs in its own
// executable, and installs the filter before main (no thread exists yet; TSYNC covers any that does).
#pragma once

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace unixgram::testing {

#if defined(__x86_64__)
inline constexpr std::uint32_t kAuditArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
inline constexpr std::uint32_t kAuditArch = AUDIT_ARCH_AARCH64;
#else
#error "refuse_syscall.hpp: add this architecture's AUDIT_ARCH_* constant"
#endif

/// Installs the filter: system call `nr` fails with `error`, every other one runs; with `arg1`, only the calls
/// whose second argument's low 32 bits equal it (an opcode, such as io_uring_register's). Returns 0, or the
/// errno of the step that failed.
inline int refuse_syscall(unsigned nr, int error, std::optional<std::uint32_t> arg1 = std::nullopt) {
    const sock_filter refuse = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<std::uint32_t>(error) & SECCOMP_RET_DATA));
    const sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    std::vector<sock_filter> code = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kAuditArch, 1, 0),
        allow,
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
    };
    if (arg1) {
        // Little-endian: the argument's low half comes first.
        code.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 3));
        code.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[1])));
        code.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, *arg1, 0, 1));
    } else {
        code.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1));
    }
    code.push_back(refuse);
    code.push_back(allow);
    sock_fprog prog{static_cast<unsigned short>(code.size()), code.data()};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno;
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0) return errno;
    return 0;
}

}  // namespace unixgram::testing
