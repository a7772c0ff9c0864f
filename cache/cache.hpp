// The public face of the shared-memory cache engine: what the protocol handlers, the master's jobs and
// the Python host call. cache/ knows nothing of sockets, processes or option parsing: it takes a plain
// Geometry. The shared-memory layout itself is declared in cache/layout.hpp.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cache/defaults.hpp"

namespace cache {

// Why an operation did what it did. Every failure has its own value and a text (describe()).
enum class Status : std::uint8_t {
  ok,
  miss,    // key absent (or expired)
  exists,  // set on a key that is present and not expired
  full,    // no free item (and purge_lru is off)
  key_empty,
  key_too_long,     // over keysize
  value_empty,      // empty values are refused, as uWSGI does
  value_too_large,  // over the largest value (blocksize; blocksize x blocks in bitmap mode)
  not_a_number,     // reserved: math on a value that is not 8 bytes is still applied (uWSGI semantics)
  out_of_memory,    // a get's ValueSink could not make room for the value
};

std::string_view describe(Status status);

struct Geometry {
  std::string name = "default";
  std::uint64_t items = 0;  // usable items: N gives N (uWSGI gives N-1)
  std::uint64_t blocksize = kDefaultBlocksize;
  std::uint32_t keysize = kDefaultKeysize;
  std::uint64_t hashsize = 0;  // hash buckets; 0 = chosen from items
  bool purge_lru = false;      // when full, evict the least recently used item instead of failing
  bool ignore_full = false;    // no "cache is FULL" log lines (the counter still counts)
  bool no_expire = false;      // expiry is a no-op: items live until deleted (--cache-no-expire)
  bool lastmod = false;  // keep the time of the last modification (uWSGI's lastmod=1): a clock read per write
  std::int64_t math_initial = 0;
  // uWSGI's bitmap mode (--cache2 bitmap=1,blocks=M): the data area is `blocks` blocks of `blocksize`
  // bytes and a value may span up to all of them (largest value blocksize x blocks). Without it
  // `blocks` is ignored (as in uWSGI), the largest value is blocksize, and the engine allocates in
  // 64-byte blocks (docs/cache.md 1b).
  bool bitmap = false;
  std::uint64_t blocks = 0;  // bitmap mode: data blocks; 0 = items
  // Persistence (docs/persistence.md): "" = anonymous shared memory; otherwise the region is a
  // MAP_SHARED mapping of this file, validated and rebuilt at create().
  std::string store;
  bool store_delete = false;  // discard a store file of another geometry/version, or a damaged one
  int store_sync =
      0;  // for the master: sync_store() every N cycles (0 = only at stop; kernel writeback meanwhile)
};

// The largest value a cache of this geometry stores (uWSGI's max_item_size): blocksize, or blocksize x
// blocks in bitmap mode.
inline std::uint64_t largest_value(const Geometry& g) {
  return g.bitmap ? g.blocksize * (g.blocks != 0 ? g.blocks : g.items) : g.blocksize;
}

// Bytes of values a cache of this geometry holds when full of its largest values: items x blocksize,
// or blocksize x blocks in bitmap mode.
inline std::uint64_t value_capacity(const Geometry& g) {
  return g.bitmap ? g.blocksize * (g.blocks != 0 ? g.blocks : g.items) : g.items * g.blocksize;
}

struct Stats {
  std::uint64_t items = 0;
  std::uint64_t capacity = 0;
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t full = 0;
  std::uint64_t evictions = 0;
  std::uint64_t expirations = 0;
  std::uint64_t lock_waits = 0;  // lock acquisitions that had to wait
  std::uint64_t lookups = 0;     // hash lookups (for probes per lookup)
  std::uint64_t probes = 0;      // chain entries examined by those lookups
  std::uint64_t shard_recoveries = 0;
  // Data area (docs/cache.md 1b): its blocks, how many are free, bytes per block, and the writes that
  // found no run although the free blocks added up to enough (fragmentation), whether they then
  // ended `full` or succeeded after purge_lru evictions.
  std::uint64_t blocks = 0;
  std::uint64_t blocks_free = 0;
  std::uint64_t block_bytes = 0;
  std::uint64_t full_fragmented = 0;
  std::int64_t last_modified_at = 0;  // unix seconds of the last write (lastmod caches; 0 otherwise)
  // Store load (this process's view of the load done at create(); 0 without a store).
  std::uint64_t store_restored = 0;  // items restored from the file
  std::uint64_t store_dropped = 0;   // items found damaged (torn write, corruption) and dropped
};

// Where a get puts the value. The engine asks for room for exactly `size` bytes, then copies the value
// there; it may ask again (a concurrent write made it read again), and the last answer holds the value.
// Lets a caller build its result (e.g. a Python bytes object) with no intermediate copy.
class ValueSink {
 public:
  virtual char* reserve(std::size_t size) = 0;  // nullptr: no room (the get returns out_of_memory)

 protected:
  ~ValueSink() = default;
};

// A sink into a std::string (reused: no allocation once its capacity suffices).
class StringSink final : public ValueSink {
 public:
  explicit StringSink(std::string& out) : out_(out) {}
  char* reserve(std::size_t size) override {
    out_.resize(size);
    return out_.data();
  }

 private:
  std::string& out_;
};

// ---- memcached's per-item metadata and conditional writes (server/memcached_*.cpp use them) ----------

// What memcached keeps beside a value. Every write gives the item a new cas (unique within its shard's
// history, never 0); writes through set/update/math store flags 0.
struct ItemMeta {
  std::uint32_t flags = 0;
  std::uint64_t cas = 0;
  std::int64_t expires = 0;  // absolute unix seconds, 0 = never
};

// A ValueSink that also wants the item's metadata before the bytes (memcached's reply header carries
// flags and cas ahead of the value). reserve_for() is called instead of reserve(), maybe more than once.
class MetaValueSink : public ValueSink {
 public:
  virtual char* reserve_for(std::size_t size, const ItemMeta& meta) = 0;
  char* reserve(std::size_t size) final { return reserve_for(size, ItemMeta{}); }

 protected:
  ~MetaValueSink() = default;
};

// What Cache::modify's decision sees: the live item (present), or nothing.
struct Current {
  bool present = false;
  std::string_view value;  // a view into the shared region: valid only during the decision
  ItemMeta meta;
};

// What the decision asks for. The written value must not point into the region (build it elsewhere).
struct Change {
  enum class Action : std::uint8_t { none, write, touch, remove };
  Action action = Action::none;
  Status status = Status::ok;   // what modify returns for Action::none
  std::string_view value;       // write: the new value (may be empty)
  std::uint32_t flags = 0;      // write
  std::int64_t expires_in = 0;  // write, touch: as set()'s (0 = never, negative = already expired)
  bool keep_expiry = false;     // write: keep the live item's expiry instead
};

// A non-owning reference to a callable (no allocation on the write path).
template <typename Signature>
class FunctionRef;
template <typename R, typename... Args>
class FunctionRef<R(Args...)> {
 public:
  template <typename F>
  FunctionRef(F& f)  // NOLINT(google-explicit-constructor): used like a function parameter
      : object_(&f), call_([](void* o, Args... args) -> R { return (*static_cast<F*>(o))(args...); }) {}
  R operator()(Args... args) const { return call_(object_, args...); }

 private:
  void* object_;
  R (*call_)(void*, Args...);
};
using Decide = FunctionRef<Change(const Current&)>;

// Seconds since the epoch; the engine's only notion of time. Tests may replace it.
using Clock = std::function<std::int64_t()>;

// One named cache living in a MAP_SHARED region created before fork. Every method is safe to call
// from any process and any thread that shares the region.
class Cache {
 public:
  // Maps and initialises the region. With geometry.store, maps that file instead: an existing store is
  // validated (header, geometry) and its index rebuilt from the intact items; a new one is created.
  // Throws std::runtime_error with a reason (bad geometry, mmap failure, a store file that cannot be
  // used and why, with what to do about it).
  static std::unique_ptr<Cache> create(const Geometry& geometry);
  virtual ~Cache() = default;

  virtual const Geometry& geometry() const = 0;

  // Copies the value into the sink. expires_at receives the absolute expiry (unix seconds, 0 = never)
  // when not null.
  virtual Status get(std::string_view key, ValueSink& sink, std::int64_t* expires_at = nullptr) = 0;
  // Copies the value into `value` (reused buffer, no allocation when it is large enough).
  Status get(std::string_view key, std::string& value, std::int64_t* expires_at = nullptr) {
    StringSink sink(value);
    return get(key, sink, expires_at);
  }
  // The same, with the item's metadata: a MetaValueSink gets it before the bytes; meta (if not null)
  // receives it after a hit.
  virtual Status get_meta(std::string_view key, MetaValueSink* sink, ItemMeta* meta) = 0;
  virtual Status exists(std::string_view key) = 0;
  // One read-modify-write of `key` under its lock (memcached's add/replace/append/prepend/cas/incr/
  // touch/delete and the meta commands): `decide` sees the live item and says what to do; it may be
  // called again if the write had to make room first. Returns ok when the action was applied (miss for
  // touch/remove of an absent key; Change::status for none; full/value_too_large as set()). After an
  // applied write or touch, `after` (if not null) receives the item's metadata and `read` (if not null)
  // its value.
  virtual Status modify(std::string_view key, Decide decide, ItemMeta* after = nullptr,
                        MetaValueSink* read = nullptr) = 0;
  // set fails with Status::exists if the key is present; update inserts or overwrites and resets expiry.
  // expires_in: seconds from now, 0 = never; negative = already expired.
  virtual Status set(std::string_view key, std::string_view value, std::int64_t expires_in = 0) = 0;
  virtual Status update(std::string_view key, std::string_view value, std::int64_t expires_in = 0) = 0;
  virtual Status del(std::string_view key) = 0;
  virtual Status clear() = 0;

  enum class MathOp : std::uint8_t { inc, dec, mul, div };
  // uWSGI semantics: applies to the first 8 bytes (int64 LE) of the value, creates the key from
  // math_initial when absent (then expiry applies), keeps an existing item's expiry, wraps on
  // overflow, division by zero gives 0. The stored value becomes 8 bytes; result gets the new number.
  virtual Status math(std::string_view key, MathOp op, std::int64_t operand, std::int64_t expires_in = 0,
                      std::int64_t* result = nullptr) = 0;

  // Calls visit for every live key, one shard at a time (never a lock over the whole table).
  virtual void for_each_key(const std::function<void(std::string_view key)>& visit) = 0;

  virtual std::uint64_t count() const = 0;
  virtual Stats stats() const = 0;

  // Background jobs, run by the master. Each holds any lock for a bounded amount of work.
  // sweep_expired frees expired items (no-op under no_expire) and returns how many it freed.
  virtual std::uint64_t sweep_expired() = 0;
  // Moves the most requested items to the cheapest place to find them; returns how many moved.
  virtual std::uint64_t reorder_hot_items() = 0;

  // True when the region is backed by a store file.
  virtual bool has_store() const { return false; }
  // Writes the region's dirty pages to the store file and waits for the device (msync MS_SYNC). Takes
  // no lock: items being written meanwhile may reach the disk torn, and are dropped at load (their seal
  // does not match). Returns false (and logs why) on failure; true without a store (nothing to do).
  virtual bool sync_store() { return true; }

  // Maps every page of the region into this process's page tables now (a forked worker otherwise
  // takes one minor fault per page on first touch). Allocates any page not yet allocated: use it
  // when the cache is expected to fill. Benchmarks call it in each process before timing.
  virtual void prefault() {}

  // The engine's clock (seconds since the epoch; the test clock when one is set). Whoever turns a
  // client's time into an expiry reads this one, so a single clock decides what has expired.
  virtual std::int64_t now() const = 0;
  // For tests only: replaces the engine's clock in this process.
  virtual void set_clock(Clock clock) = 0;
  // For tests only: in this process, every write calls `hook` with its value half written, inside the
  // shard lock and the mutation. Crash-safety tests make it tell their parent, which SIGKILLs the
  // writer there: a kill inside a mutation on every run, whatever the machine's speed.
  virtual void set_mutation_hook_for_tests(std::function<void()> hook) { (void)hook; }
};

// The arithmetic of Cache::math, on its own for callers that apply it to a value they hold (the Python
// host's remote caches): wraps on overflow, division by zero gives 0, INT64_MIN / -1 wraps.
std::int64_t apply_math(Cache::MathOp op, std::int64_t a, std::int64_t b);

// Every cache of one server, in creation order; the first is the default cache.
class CacheSet {
 public:
  Cache& add(std::unique_ptr<Cache> cache);
  // "" selects the default cache; nullptr when the name is unknown or there are no caches.
  Cache* find(std::string_view name);
  Cache* default_cache() { return caches_.empty() ? nullptr : caches_.front().get(); }
  const std::vector<std::unique_ptr<Cache>>& all() const { return caches_; }
  bool empty() const { return caches_.empty(); }

 private:
  std::vector<std::unique_ptr<Cache>> caches_;
};

}  // namespace cache
