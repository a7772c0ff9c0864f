// The store-file loader (cache/, --cache-store): what a server finds in its store file after a crash,
// a power loss or damage. The input is a script: writes through the engine's API on a cache backed by a
// fresh store file (with, optionally, a snapshot of the file taken part-way: a power loss can leave
// pages from different moments), then changes to the closed file (bytes overwritten anywhere, in the
// item table, the seals or the blocks; pages put back from the snapshot), then a load. Properties:
//   - the load never crashes or reads outside the file; a damaged header is refused with a reason;
//   - every item the loaded cache serves is one that was written whole (key, value and expiry as a
//     get returned them right after some successful write): never a torn or forged one;
//   - with no change to the file, every item written is back exactly (nothing lost);
//   - after a load the free lists are exact: filling the cache with new items overwrites none of the
//     restored ones.
#include <fcntl.h>
#include <fuzzer/FuzzedDataProvider.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "cache/cache.hpp"
#include "cache/layout.hpp"
#include "tests/fuzz/check.hpp"

namespace {

using cache::layout::RegionHeader;

constexpr std::int64_t kNow = 1'800'000'000;

// Plain buffers, not std::string: the exit handler below runs after static destructors would have.
char g_store_dir[64];
char g_store_file[80];

void remove_store_dir() {
  unlink(g_store_file);
  rmdir(g_store_dir);
}

const std::string& store_path() {
  static const std::string path = [] {
    std::snprintf(g_store_dir, sizeof g_store_dir, "/dev/shm/ucached-fuzz-store-%d",
                  static_cast<int>(getpid()));
    std::snprintf(g_store_file, sizeof g_store_file, "%s/store", g_store_dir);
    mkdir(g_store_dir, 0700);
    std::atexit(remove_store_dir);  // a finished run leaves nothing in /dev/shm (a crash keeps it to look at)
    return std::string(g_store_file);
  }();
  return path;
}

// Small enough that the fuzzer fills it, with keys long enough to need key-extension slots.
cache::Geometry geometry() {
  cache::Geometry g{.name = "fuzz", .items = 8, .blocksize = 48, .keysize = 300};
  g.store = store_path();
  return g;
}

std::unique_ptr<cache::Cache> open_cache() {
  auto engine = cache::Cache::create(geometry());
  engine->set_clock([] { return kNow; });
  return engine;
}

std::string read_file(int fd) {
  struct stat st {};
  FUZZ_CHECK(fstat(fd, &st) == 0);
  std::string bytes(static_cast<std::size_t>(st.st_size), '\0');
  FUZZ_CHECK(pread(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
  return bytes;
}

std::uint64_t field(const std::string& file, std::size_t offset) {
  std::uint64_t value = 0;
  FUZZ_CHECK(offset + 8 <= file.size());
  std::memcpy(&value, file.data() + offset, 8);
  return value;
}

using Written = std::tuple<std::string, std::string, std::int64_t>;  // key, value, absolute expiry

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider input(data, size);
  unlink(store_path().c_str());
  std::set<Written> history;                                          // every item state written whole
  std::map<std::string, std::pair<std::string, std::int64_t>> model;  // what the cache holds at the end
  std::string snapshot;
  {
    auto engine = open_cache();
    const int operations = input.ConsumeIntegralInRange(0, 24);
    const int snapshot_after = input.ConsumeIntegralInRange(-1, operations);
    for (int op = 0; op < operations; ++op) {
      const int kind = input.ConsumeIntegralInRange(0, 3);
      const std::string key = input.ConsumeRandomLengthString(300);
      const std::string value = input.ConsumeRandomLengthString(48);
      const std::int64_t expires_in = input.ConsumeIntegralInRange(-1, 2) * 1000;
      cache::Status status = cache::Status::miss;
      if (kind == 0) {
        status = engine->set(key, value, expires_in);
      } else if (kind == 1) {
        status = engine->update(key, value, expires_in);
      } else if (kind == 2) {
        status =
            engine->math(key, cache::Cache::MathOp::inc, static_cast<std::int64_t>(value.size()), expires_in);
      } else {
        engine->del(key);
      }
      // The model follows what the engine serves after each operation; the history records the states
      // that successful writes produced.
      std::string stored;
      std::int64_t expires_at = 0;
      if (engine->get(key, stored, &expires_at) == cache::Status::ok) {
        if (status == cache::Status::ok) history.emplace(key, stored, expires_at);
        model[key] = {stored, expires_at};
      } else {
        model.erase(key);
      }
      if (op + 1 == snapshot_after) {
        const int fd = open(store_path().c_str(), O_RDONLY | O_CLOEXEC);
        snapshot = read_file(fd);
        close(fd);
      }
    }
    // purge_lru is off: an item evicted for room is impossible, so the model is exact.
  }

  // Changes to the closed file.
  const int fd = open(store_path().c_str(), O_RDWR | O_CLOEXEC);
  FUZZ_CHECK(fd >= 0);
  const std::string file = read_file(fd);
  const std::uint64_t items_at = field(file, offsetof(RegionHeader, items_offset));
  const std::uint64_t seals_at = field(file, offsetof(RegionHeader, seals_offset));
  const std::uint64_t blocks_at = field(file, offsetof(RegionHeader, blocks_offset));
  FUZZ_CHECK(items_at < seals_at && seals_at < blocks_at && blocks_at < file.size());
  bool changed = false, header_changed = false;
  while (input.remaining_bytes() > 0) {
    const int area = input.ConsumeIntegralInRange(0, 4);
    const std::uint64_t begin[] = {0, items_at, seals_at, blocks_at};
    const std::uint64_t end[] = {file.size(), seals_at, blocks_at, file.size()};
    std::string bytes;
    std::uint64_t at = 0;
    if (area == 4) {  // a page of the snapshot put back
      if (snapshot.empty()) continue;
      at = input.ConsumeIntegralInRange<std::uint64_t>(0, file.size() / cache::layout::kPage - 1) *
           cache::layout::kPage;
      bytes = snapshot.substr(at, cache::layout::kPage);
    } else {
      at = input.ConsumeIntegralInRange<std::uint64_t>(begin[area], end[area] - 1);
      bytes = input.ConsumeBytesAsString(input.ConsumeIntegralInRange<std::size_t>(1, 16));
      if (bytes.empty()) break;
      bytes = bytes.substr(0, file.size() - at);
    }
    if (file.compare(at, bytes.size(), bytes) == 0) continue;
    FUZZ_CHECK(pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(at)) ==
               static_cast<ssize_t>(bytes.size()));
    changed = true;
    header_changed = header_changed || at < sizeof(RegionHeader);
  }
  close(fd);

  std::unique_ptr<cache::Cache> loaded;
  try {
    loaded = open_cache();
  } catch (const std::runtime_error& error) {
    // Only a damaged header may be refused (the message says why); damaged items are dropped.
    FUZZ_CHECK(header_changed && std::string(error.what()).find("store") != std::string::npos);
    return 0;
  }
  std::vector<std::string> keys;
  loaded->for_each_key([&](std::string_view key) { keys.emplace_back(key); });
  std::map<std::string, std::pair<std::string, std::int64_t>> served;
  for (const std::string& key : keys) {
    std::string value;
    std::int64_t expires_at = 0;
    if (loaded->get(key, value, &expires_at) != cache::Status::ok) continue;  // expired
    FUZZ_CHECK(history.count({key, value, expires_at}) == 1);
    FUZZ_CHECK(served.emplace(key, std::pair(value, expires_at)).second);
  }
  if (!changed) {
    FUZZ_CHECK(served == model);
    FUZZ_CHECK(loaded->stats().store_dropped == 0);
  }
  // Fill every free slot with new items (keys no write used: they start with a NUL byte).
  for (int i = 0; i < 16; ++i) {
    const std::string key = std::string(1, '\0') + std::to_string(i);
    const cache::Status status = loaded->set(key, std::string(48 - i, 'x'), 0);
    FUZZ_CHECK(status == cache::Status::ok || status == cache::Status::full ||
               status == cache::Status::exists);
  }
  for (const auto& [key, item] : served) {
    std::string value;
    std::int64_t expires_at = 0;
    FUZZ_CHECK(loaded->get(key, value, &expires_at) == cache::Status::ok);
    FUZZ_CHECK(value == item.first && expires_at == item.second);
  }
  return 0;
}
