// UDP cache sync, as uWSGI's node= / udp= (--cache-udp-node / --cache-udp-server; spec §2.7): every
// successful write of a cache is sent to its nodes as one datagram, and a cache with udp= applies the
// datagrams it receives (without sending them on). Fire and forget, as in uWSGI: a lost datagram is a
// lost update on that node.
//
//   set/update: [111, L, 10] + array [key, value, expires]  (expires: absolute unix seconds, "0" = never)
//   delete:     [111, L, 11] + array [key]
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cache/cache.hpp"
#include "server/protocol.hpp"  // kUdpSet, kUdpDelete

namespace server {

// The datagrams. Throw std::length_error when the packet cannot say the sizes (over 65535 bytes).
std::string udp_set_packet(std::string_view key, std::string_view value, std::uint64_t expires);
std::string udp_delete_packet(std::string_view key);

// Applies one received datagram to the cache: a set as an update with its absolute expiry (an already
// expired one is not stored), a delete as a delete. False with a reason for anything malformed.
bool apply_udp_packet(cache::Cache& cache, std::string_view datagram, std::string* error = nullptr);

// Wraps a cache so that every successful set, update, math and del is also sent to `nodes` ("ip:port"):
// the value and expiry sent are the ones stored (read back after the write, so math sends the result,
// not the operand as uWSGI does). clear is not sent: the protocol has no packet for it. Values over
// 65535 bytes cannot be sent (the array's lengths are 16 bits; uWSGI truncates them): they are
// skipped and logged (rate limited). Throws std::runtime_error for an address that does not resolve.
std::unique_ptr<cache::Cache> replicate_to_nodes(std::unique_ptr<cache::Cache> inner,
                                                 const std::vector<std::string>& nodes);

// Receives datagrams on `addresses` ("ip:port") for one cache, in a thread of its own. The sockets are
// bound by the constructor (std::runtime_error naming the address on failure), the thread runs from
// start() to stop(). Malformed datagrams are counted and logged, rate limited.
class UdpReceiver {
 public:
  UdpReceiver(cache::Cache& cache, const std::vector<std::string>& addresses);
  ~UdpReceiver();
  UdpReceiver(const UdpReceiver&) = delete;
  UdpReceiver& operator=(const UdpReceiver&) = delete;
  void start();
  void stop();

 private:
  void loop();

  cache::Cache& cache_;
  std::vector<int> fds_;
  int wake_fd_ = -1;  // eventfd: stop() wakes the thread
  std::thread thread_;
};

}  // namespace server
