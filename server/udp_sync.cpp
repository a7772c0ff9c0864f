#include "server/udp_sync.hpp"

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <stdexcept>

#include "common/address.hpp"
#include "common/log.hpp"
#include "server/protocol.hpp"

namespace server {

namespace {

constexpr std::size_t kMaxDatagram = 65536;

std::string packet(std::uint8_t modifier2, std::initializer_list<std::string_view> items) {
  std::string body;
  for (std::string_view item : items) append_array_item(body, item);
  if (body.size() > 0xffff) throw std::length_error("UDP sync packet over 65535 bytes");
  std::string out;
  encode_header(out, kModifierCache, static_cast<std::uint16_t>(body.size()), modifier2);
  return out + body;
}

// "ip:port", "[v6]:port" or "name:port" (common/address.hpp) -> a UDP socket of the right family
// (connected to it when `connect_to`, bound to it otherwise). Throws std::runtime_error naming the address.
int udp_socket(const std::string& address, bool connect_to) {
  std::string error;
  const auto parsed = common::parse_address(address, "", error);
  if (!parsed || parsed->is_unix) throw std::runtime_error("UDP address " + address + ": expected ip:port");
  std::vector<common::Endpoint> endpoints;
  if (!common::resolve_address(*parsed, SOCK_DGRAM, !connect_to, endpoints, error))
    throw std::runtime_error("UDP address " + address + ": " + error);
  error = "no address";
  int fd = -1;
  for (const common::Endpoint& endpoint : endpoints) {
    fd = socket(endpoint.family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      error = std::strerror(errno);
      continue;
    }
    const auto* to = reinterpret_cast<const sockaddr*>(&endpoint.address);
    if ((connect_to ? connect(fd, to, endpoint.length) : bind(fd, to, endpoint.length)) == 0) break;
    error = std::strerror(errno);
    close(fd);
    fd = -1;
  }
  if (fd < 0)
    throw std::runtime_error("UDP address " + address + ": " + (connect_to ? "connect: " : "bind: ") + error);
  return fd;
}

class ReplicatingCache final : public cache::Cache {
 public:
  ReplicatingCache(std::unique_ptr<cache::Cache> inner, const std::vector<std::string>& nodes)
      : inner_(std::move(inner)) {
    for (const std::string& node : nodes) {
      nodes_.push_back(node);
      fds_.push_back(udp_socket(node, true));
    }
  }
  ~ReplicatingCache() override {
    for (int fd : fds_) close(fd);
  }

  const cache::Geometry& geometry() const override { return inner_->geometry(); }
  using cache::Cache::get;
  cache::Status get(std::string_view key, cache::ValueSink& sink, std::int64_t* expires_at) override {
    return inner_->get(key, sink, expires_at);
  }
  cache::Status exists(std::string_view key) override { return inner_->exists(key); }
  cache::Status get_meta(std::string_view key, cache::MetaValueSink* sink, cache::ItemMeta* meta) override {
    return inner_->get_meta(key, sink, meta);
  }
  // A memcached command's write (or delete) reaches the nodes as the item it left.
  cache::Status modify(std::string_view key, cache::Decide decide, cache::ItemMeta* after,
                       cache::MetaValueSink* read) override {
    const cache::Status status = inner_->modify(key, decide, after, read);
    if (status != cache::Status::ok) return status;
    if (inner_->exists(key) != cache::Status::ok) {
      send(udp_delete_packet(key), key);
      return status;
    }
    return sent_stored(key, status);
  }
  cache::Status set(std::string_view key, std::string_view value, std::int64_t expires_in) override {
    return sent_stored(key, inner_->set(key, value, expires_in));
  }
  cache::Status update(std::string_view key, std::string_view value, std::int64_t expires_in) override {
    return sent_stored(key, inner_->update(key, value, expires_in));
  }
  cache::Status math(std::string_view key, MathOp op, std::int64_t operand, std::int64_t expires_in,
                     std::int64_t* result) override {
    return sent_stored(key, inner_->math(key, op, operand, expires_in, result));
  }
  cache::Status del(std::string_view key) override {
    const cache::Status status = inner_->del(key);
    if (status == cache::Status::ok) send(udp_delete_packet(key), key);
    return status;
  }
  cache::Status clear() override { return inner_->clear(); }
  void for_each_key(const std::function<void(std::string_view key)>& visit) override {
    inner_->for_each_key(visit);
  }
  std::uint64_t count() const override { return inner_->count(); }
  cache::Stats stats() const override { return inner_->stats(); }
  std::uint64_t sweep_expired() override { return inner_->sweep_expired(); }
  std::uint64_t reorder_hot_items() override { return inner_->reorder_hot_items(); }
  bool has_store() const override { return inner_->has_store(); }
  bool sync_store() override { return inner_->sync_store(); }
  void prefault() override { inner_->prefault(); }
  std::int64_t now() const override { return inner_->now(); }
  void set_clock(cache::Clock clock) override { inner_->set_clock(std::move(clock)); }
  void set_mutation_hook_for_tests(std::function<void()> hook) override {
    inner_->set_mutation_hook_for_tests(std::move(hook));
  }

 private:
  // After a successful write: the item as stored (value and absolute expiry) goes to every node.
  cache::Status sent_stored(std::string_view key, cache::Status status) {
    if (status != cache::Status::ok) return status;
    thread_local std::string value;
    std::int64_t expires = 0;
    if (inner_->get(key, value, &expires) != cache::Status::ok) return status;  // deleted meanwhile
    std::string datagram;
    try {
      datagram = udp_set_packet(key, value, static_cast<std::uint64_t>(expires));
    } catch (const std::length_error&) {
      log_.log(fmt::format(
          "UDP cache sync: cache \"{}\": key {} with a value of {} bytes cannot be sent (a UDP sync packet "
          "has 16-bit lengths: over 65535 bytes, a value reaches the other nodes only by their --cache-sync "
          "at start or by a magic set sent to each)",
          geometry().name, printable(key), value.size()));
      return status;
    }
    send(datagram, key);
    return status;
  }

  void send(const std::string& datagram, std::string_view key) {
    for (std::size_t i = 0; i < fds_.size(); ++i) {
      if (::send(fds_[i], datagram.data(), datagram.size(), MSG_NOSIGNAL) < 0 && errno != ECONNREFUSED) {
        log_.log(fmt::format("UDP cache sync: cache \"{}\": sending {} to {}: {}", geometry().name,
                             printable(key), nodes_[i], std::strerror(errno)));
      }
    }
  }

  std::unique_ptr<cache::Cache> inner_;
  std::vector<std::string> nodes_;
  std::vector<int> fds_;  // one connected UDP socket per node, shared by the forked workers
  common::RateLimitedLog log_{3, 60};
};

}  // namespace

std::string udp_set_packet(std::string_view key, std::string_view value, std::uint64_t expires) {
  return packet(kUdpSet, {key, value, std::to_string(expires)});
}

std::string udp_delete_packet(std::string_view key) { return packet(kUdpDelete, {key}); }

bool apply_udp_packet(cache::Cache& cache, std::string_view datagram, std::string* error) {
  const auto fail = [&](std::string why) {
    if (error) *error = std::move(why);
    return false;
  };
  if (datagram.size() < kHeaderSize)
    return fail(fmt::format("{} bytes: shorter than a header", datagram.size()));
  const PacketHeader header = decode_header(datagram.data());
  if (header.modifier1 != kModifierCache)
    return fail(fmt::format("modifier1 {} (want 111)", header.modifier1));
  if (header.datasize != datagram.size() - kHeaderSize)
    return fail(fmt::format("datasize {} but {} bytes follow the header", header.datasize,
                            datagram.size() - kHeaderSize));
  std::vector<std::string_view> items;
  ArrayReader reader(datagram.substr(kHeaderSize));
  for (std::string_view item; reader.next(item);) items.push_back(item);
  if (reader.failed()) return fail(reader.error());
  if (items.empty() || items[0].empty()) return fail("no key");
  if (header.modifier2 == kUdpDelete) {
    if (items.size() != 1) return fail(fmt::format("delete with {} items (want the key only)", items.size()));
    cache.del(items[0]);  // absent already: nothing to do
    return true;
  }
  if (header.modifier2 != kUdpSet) return fail(fmt::format("modifier2 {} (want 10 or 11)", header.modifier2));
  if (items.size() < 2 || items.size() > 3)
    return fail(fmt::format("set with {} items (want key, value[, expires])", items.size()));
  std::uint64_t expires = 0;
  if (items.size() == 3 && !items[2].empty() && !parse_decimal(items[2], expires))
    return fail("expires " + printable(items[2]) + " is not a number");
  std::int64_t expires_in = 0;
  if (expires != 0) {
    const auto now = static_cast<std::uint64_t>(std::time(nullptr));
    if (expires <= now) return true;  // expired in transit: nothing to store
    // Beyond INT64_MAX seconds ahead the cast would turn "far future" into "already expired".
    expires_in = static_cast<std::int64_t>(std::min<std::uint64_t>(expires - now, INT64_MAX));
  }
  const cache::Status status = cache.update(items[0], items[1], expires_in);
  if (status != cache::Status::ok)
    return fail(fmt::format("key {}: {}", printable(items[0]), cache::describe(status)));
  return true;
}

std::unique_ptr<cache::Cache> replicate_to_nodes(std::unique_ptr<cache::Cache> inner,
                                                 const std::vector<std::string>& nodes) {
  return std::make_unique<ReplicatingCache>(std::move(inner), nodes);
}

UdpReceiver::UdpReceiver(cache::Cache& cache, const std::vector<std::string>& addresses) : cache_(cache) {
  try {
    for (const std::string& address : addresses) fds_.push_back(udp_socket(address, false));
  } catch (...) {
    for (int fd : fds_) close(fd);
    throw;
  }
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  for (const std::string& address : addresses)
    common::log("UDP cache sync: cache \"{}\" receives updates on {}", cache.geometry().name, address);
}

UdpReceiver::~UdpReceiver() {
  stop();
  for (int fd : fds_) close(fd);
  if (wake_fd_ >= 0) close(wake_fd_);
}

void UdpReceiver::start() {
  thread_ = std::thread([this] { loop(); });
}

void UdpReceiver::stop() {
  if (!thread_.joinable()) return;
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = write(wake_fd_, &one, sizeof one);
  thread_.join();
}

void UdpReceiver::loop() {
  std::vector<pollfd> fds;
  for (int fd : fds_) fds.push_back({fd, POLLIN, 0});
  fds.push_back({wake_fd_, POLLIN, 0});
  std::string buffer(kMaxDatagram, '\0');
  common::RateLimitedLog log(3, 60);
  for (;;) {
    if (poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) return;
    if (fds.back().revents != 0) return;  // stop()
    for (std::size_t i = 0; i + 1 < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      for (;;) {  // drain: many datagrams per wake-up under load
        const ssize_t n = recv(fds[i].fd, buffer.data(), buffer.size(), MSG_TRUNC);
        if (n < 0) break;
        std::string error;
        if (static_cast<std::size_t>(n) > buffer.size())
          error = fmt::format("a datagram of {} bytes (the largest is {})", n, buffer.size());
        else if (apply_udp_packet(cache_, std::string_view(buffer.data(), static_cast<std::size_t>(n)),
                                  &error))
          continue;
        log.log(
            fmt::format("UDP cache sync: cache \"{}\": packet dropped: {}", cache_.geometry().name, error));
      }
    }
  }
}

}  // namespace server
