// The cache client's reply parser (server/client.*, and the --cache-sync load behind it): what a
// remote cache server, ours or uWSGI or a hostile one, answers. The first input byte chooses the call
// (get, keys, stats, math, set, exists, dump through sync_cache_from_nodes), the rest is the reply a
// peer in a thread of this process sends on a real UNIX socket before closing. Properties, besides no
// crash, no hang and no read outside the reply:
//   - an ok answer is one the reply justifies: header [111, L, 17], vars that parse, status=ok, and for
//     get/keys the `size` bytes that follow (get: the value and its expires; keys: the array, its count;
//     stats: the vars but status; math: the value var's number);
//   - a sync that succeeds stores only items of the image, and accounts for every one of them.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "cache/cache.hpp"
#include "server/cache_dump.hpp"
#include "server/cache_sync.hpp"
#include "server/client.hpp"
#include "server/protocol.hpp"
#include "tests/fuzz/check.hpp"

namespace {

// A peer that answers every connection with the current reply, then closes its side and drains the
// request (closing with unread bytes would reset the connection before the client read the reply).
class Peer {
 public:
  Peer() : name_("@ucached-fuzz-client-" + std::to_string(getpid())) {
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path + 1, name_.data() + 1, name_.size() - 1);
    const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name_.size());
    FUZZ_CHECK(bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), length) == 0);
    FUZZ_CHECK(listen(listen_fd_, 16) == 0);
    std::thread([this] { serve(); }).detach();  // lives as long as the process
  }
  const std::string& address() const { return name_; }
  void set_reply(std::string_view reply) {
    std::lock_guard<std::mutex> lock(mutex_);
    reply_.assign(reply);
  }

 private:
  void serve() {
    for (;;) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::string reply;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        reply = reply_;
      }
      for (std::size_t sent = 0; sent < reply.size();) {
        const ssize_t n = send(fd, reply.data() + sent, reply.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;  // the client stopped reading
        sent += static_cast<std::size_t>(n);
      }
      shutdown(fd, SHUT_WR);
      char sink[4096];
      while (read(fd, sink, sizeof sink) > 0) {
      }
      close(fd);
    }
  }

  std::string name_;
  int listen_fd_ = -1;
  std::mutex mutex_;
  std::string reply_;
};

Peer& peer() {
  static Peer* instance = new Peer;
  return *instance;
}

// The reply as the protocol reads it: its vars (last occurrence wins) and what follows them.
struct Parsed {
  bool magic = false;  // header [111, L, 17] and vars that parse
  server::ReplyVars vars;
  std::string_view after;
  const std::string* var(std::string_view name) const { return server::find_var(vars, name); }
};

Parsed parse(std::string_view reply, std::uint8_t modifier2) {
  Parsed out;
  if (reply.size() < server::kHeaderSize) return out;
  const server::PacketHeader header = server::decode_header(reply.data());
  if (header.modifier1 != server::kModifierCache || header.modifier2 != modifier2 ||
      reply.size() < server::kHeaderSize + header.datasize)
    return out;
  server::VarsReader reader(reply.substr(server::kHeaderSize, header.datasize));
  std::string_view key, value;
  while (reader.next(key, value)) out.vars.emplace_back(key, value);
  out.magic = !reader.failed();
  out.after = reply.substr(server::kHeaderSize + header.datasize);
  return out;
}

// The `size` bytes after the vars of an ok reply, when the reply carries them all.
bool sized_body(const Parsed& parsed, std::string_view& body) {
  const std::string* size = parsed.var("size");
  std::uint64_t length = 0;
  if (size == nullptr || !server::parse_decimal(*size, length) || length > parsed.after.size()) return false;
  body = parsed.after.substr(0, length);
  return true;
}

void check_magic_call(int call, std::string_view reply) {
  server::CacheClient client(peer().address(), {.timeout_ms = 10000, .persistent = false});
  const Parsed parsed = parse(reply, 17);
  const std::string* status = parsed.var("status");
  const bool status_ok = parsed.magic && status != nullptr && *status == "ok";
  std::string_view body;
  switch (call) {
    case 0: {
      std::string value;
      std::int64_t expires_at = -1;
      const server::ClientStatus got = client.get("k1", value, "", &expires_at);
      if (got != server::ClientStatus::ok) return;
      FUZZ_CHECK(status_ok && sized_body(parsed, body) && value == body && !value.empty());
      std::uint64_t expires = 0;
      const std::string* text = parsed.var("expires");
      const bool has = text != nullptr && server::parse_decimal(*text, expires) && expires <= INT64_MAX;
      FUZZ_CHECK(expires_at == (has ? static_cast<std::int64_t>(expires) : 0));
      return;
    }
    case 1: {
      std::vector<std::string> keys;
      if (client.keys(keys) != server::ClientStatus::ok) return;
      FUZZ_CHECK(status_ok && sized_body(parsed, body));
      std::vector<std::string> expected;
      server::ArrayReader reader(body);
      for (std::string_view item; reader.next(item);) expected.emplace_back(item);
      FUZZ_CHECK(!reader.failed() && keys == expected);
      if (const std::string* count = parsed.var("count")) FUZZ_CHECK(*count == std::to_string(keys.size()));
      return;
    }
    case 2: {
      server::ReplyVars stats;
      if (client.stats(stats) != server::ClientStatus::ok) return;
      FUZZ_CHECK(status_ok);
      server::ReplyVars expected;
      for (const auto& pair : parsed.vars)
        if (pair.first != "status") expected.push_back(pair);
      FUZZ_CHECK(stats == expected);
      return;
    }
    case 3: {
      std::int64_t result = 0;
      if (client.math("inc", "n", 7, 0, "", &result) != server::ClientStatus::ok) return;
      FUZZ_CHECK(status_ok);
      const std::string* value = parsed.var("value");
      std::int64_t expected = 0;
      FUZZ_CHECK(value != nullptr);
      std::from_chars(value->data(), value->data() + value->size(), expected);
      FUZZ_CHECK(result == expected);
      return;
    }
    case 4:
      if (client.set("k1", "value1", 60) == server::ClientStatus::ok) FUZZ_CHECK(status_ok);
      return;
    default:
      if (client.exists("k1") == server::ClientStatus::ok) FUZZ_CHECK(status_ok);
      return;
  }
}

cache::Cache& sync_target() {
  static std::unique_ptr<cache::Cache> engine =
      cache::Cache::create(cache::Geometry{.name = "default", .items = 8, .blocksize = 64, .keysize = 32});
  return *engine;
}

void check_sync(std::string_view reply) {
  cache::Cache& cache = sync_target();
  cache.clear();
  const server::SyncResult result = server::sync_cache_from_nodes(cache, {peer().address()}, 10000);
  if (!result.ok) {
    FUZZ_CHECK(!result.error.empty());
    return;
  }
  const Parsed parsed = parse(reply, 7);
  FUZZ_CHECK(parsed.magic);
  // The image's records, read by the parsers fuzz_dump_image checks.
  std::map<std::string, std::set<std::string>> records;
  std::uint64_t count = 0;
  const auto visit = [&](std::string_view key, std::string_view value, std::uint64_t) {
    records[std::string(key)].emplace(value);
    ++count;
  };
  const std::string* format = parsed.var("format");
  const auto number = [&](std::string_view name) {
    std::uint64_t value = 0;
    const std::string* text = parsed.var(name);
    return text != nullptr && server::parse_decimal(*text, value) ? value : 0;
  };
  const bool read = format != nullptr ? server::parse_dump_image(parsed.after, visit)
                                      : server::parse_uwsgi_dump_image(parsed.after, number("items"),
                                                                       number("blocksize"), visit);
  FUZZ_CHECK(read);
  FUZZ_CHECK(result.loaded + result.expired + result.skipped == count);
  cache.for_each_key([&](std::string_view key) {
    std::string value;
    if (cache.get(key, value) != cache::Status::ok) return;
    const auto found = records.find(std::string(key));
    FUZZ_CHECK(found != records.end() && found->second.count(value) == 1);
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view reply(reinterpret_cast<const char*>(data) + 1, size - 1);
  peer().set_reply(reply);
  const int call = data[0] % 7;
  if (call == 6) {
    check_sync(reply);
  } else {
    check_magic_call(call, reply);
  }
  return 0;
}
