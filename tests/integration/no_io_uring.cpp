// no_io_uring [--memlock BYTES] PROGRAM ARGS...: execs PROGRAM where the kernel refuses io_uring, for
// the tests of the memcached connections' fallback to the epoll loop (docs/memcached.md). The refusals
// are the kernel's own, inherited by every process PROGRAM forks: the server's code path is exactly the
// one it takes in such a container or on such a host.
//
// Default: a seccomp filter makes io_uring_setup, io_uring_enter and io_uring_register fail with EPERM.
// EPERM rather than ENOSYS because it is what the refusals met in practice answer: Docker's default
// seccomp profile (io_uring left out of its allow list in 2023; its default errno is EPERM) and
// kernel.io_uring_disabled=2. ENOSYS would be a kernel built without io_uring, now rare. The master's
// probe and every worker's setup are refused alike.
//
// --memlock BYTES: no filter; RLIMIT_MEMLOCK set to BYTES and CAP_IPC_LOCK dropped (from the bounding
// set too, or the exec would give it back to root). Linux 6.18 charges a ring's memory to the locked-
// memory limit of a process without that capability (checked: a 4-entry ring takes 2 pages, the
// memcached ring with its 256 submissions, 4096 completions and provided-buffer ring 23), so 64 KiB -
// the kernel's default limit before Linux 5.16 - admits the master's small probe and refuses each
// worker's ring: the case where the probe passes and a worker falls back on its own. The charge is
// counted per user, across processes (and released a little after a ring's close): other processes of
// the same user without CAP_IPC_LOCK only make the workers' refusal surer, and the probe has 14 pages
// of room.
#include <errno.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

#if defined(__x86_64__)
constexpr unsigned kNativeArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr unsigned kNativeArch = AUDIT_ARCH_AARCH64;
#else
#error "no_io_uring: add this architecture's AUDIT_ARCH_ value"
#endif

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "no_io_uring: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

void refuse_io_uring() {
  // A call from another ABI (x86's x32 or i386 entry points) would carry other numbers and slip past the
  // comparisons below: such a call kills the process instead, as container profiles do.
  sock_filter program[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kNativeArch, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
#if defined(__x86_64__)
    BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, __X32_SYSCALL_BIT, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
#endif
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 3, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_enter, 2, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_register, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
  };
  sock_fprog fprog{static_cast<unsigned short>(sizeof program / sizeof program[0]), program};
  // Lets a process without CAP_SYS_ADMIN install the filter; for root it changes nothing the tests see.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail("prctl(PR_SET_NO_NEW_PRIVS)");
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0) fail("seccomp(SECCOMP_SET_MODE_FILTER)");
}

void limit_locked_memory(const char* text) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long bytes = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0') {
    std::fprintf(stderr, "no_io_uring: --memlock wants a number of bytes, not \"%s\"\n", text);
    std::exit(2);
  }
  // Without CAP_IPC_LOCK the kernel skips the accounting. Dropped from the bounding set (which root's
  // exec grants from) and from this process's sets; one who cannot drop it from the bounding set is
  // not root and does not get it back at exec.
  if (prctl(PR_CAPBSET_READ, CAP_IPC_LOCK, 0, 0, 0) == 1 &&
      prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0) != 0 && geteuid() == 0)
    fail("prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK)");
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &header, data) != 0) fail("capget");
  const unsigned bit = 1u << (CAP_IPC_LOCK % 32);
  auto& word = data[CAP_IPC_LOCK / 32];
  word.effective &= ~bit;
  word.permitted &= ~bit;
  word.inheritable &= ~bit;
  if (syscall(SYS_capset, &header, data) != 0) fail("capset (dropping CAP_IPC_LOCK)");
  const rlimit limit{bytes, bytes};
  if (setrlimit(RLIMIT_MEMLOCK, &limit) != 0) fail("setrlimit(RLIMIT_MEMLOCK)");
}

}  // namespace

int main(int argc, char** argv) {
  const bool memlock = argc > 1 && std::string(argv[1]) == "--memlock";
  const int first = memlock ? 3 : 1;
  if (first >= argc) {
    std::fprintf(stderr, "usage: no_io_uring [--memlock BYTES] PROGRAM ARGS...\n");
    return 2;
  }
  if (memlock)
    limit_locked_memory(argv[2]);
  else
    refuse_io_uring();
  execvp(argv[first], argv + first);
  std::fprintf(stderr, "no_io_uring: exec %s: %s\n", argv[first], std::strerror(errno));
  return 127;
}
