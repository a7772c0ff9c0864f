// Test-only hooks: points where a test can hold the server so that a fault it injects (a SIGKILL)
// lands inside an operation that is otherwise too short to aim at. Inert unless their environment
// variable is set; no option enables them and nothing outside tests/ sets it.
#pragma once

#include <string_view>

namespace master {

// UCACHED_TEST_HOLD_STORE_SYNC names a FIFO that the test keeps open read-write. At each periodic
// store sync the cache-jobs thread reads one byte from it without blocking: none, nothing happens;
// 'b' holds that sync before its msync, 'a' after it (before the end line). A held sync logs
// `store sync: cache "NAME": held before|after the msync (test hook)` and then blocks reading the
// FIFO until the test closes it (or writes again), which it does not do before its SIGKILL.
inline constexpr const char* kHoldStoreSyncEnv = "UCACHED_TEST_HOLD_STORE_SYNC";
enum class SyncPoint : char { before_msync = 'b', after_msync = 'a' };

// Called by the cache-jobs thread only, at each point of each store sync (before_msync first).
void store_sync_test_hook(std::string_view cache, SyncPoint point);

}  // namespace master
