#include "server/client.hpp"

#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <stdexcept>

#include "cache/defaults.hpp"
#include "common/address.hpp"
#include "server/protocol.hpp"

namespace server {

namespace client_detail {

// The request of one magic command.
struct MagicCall {
  std::string_view cmd = {};
  std::string_view key = {};
  std::string_view cache = {};
  std::string_view value = {};
  std::int64_t expires = 0;
  bool with_key = true;
  bool with_value = false;  // set/update: size var(s) and the value as the body
  bool reads_body = false;  // the ok reply carries `size` bytes after the vars (get, keys)
};

// The parsed reply to one magic command.
struct MagicReply {
  std::string status;
  ReplyVars vars;    // every var, in order
  std::string body;  // `size` bytes for get / keys
  std::int64_t expires = 0;
};

}  // namespace client_detail

namespace {

using client_detail::MagicCall;
using client_detail::MagicReply;

using Clock = std::chrono::steady_clock;

// Largest value accepted in a reply: the largest value any of our caches stores (1 GiB); a bigger size
// var is garbage, and trusting it would allocate that much.
inline constexpr std::uint64_t kMaxValue = cache::kMaxValueBytes;

// A kept connection found closed this soon after its reply was closed by a server that closes after
// every reply (uWSGI), not by our server's idle timeout: --socket-timeout is at least 1 s.
inline constexpr auto kQuickClose = std::chrono::milliseconds(900);

std::string errno_text(int error) { return std::strerror(error); }

// How one socket operation ended.
enum class Io { ok, eof, timeout, failed };

using common::Endpoint;

// The address the way --socket takes it (common/address.hpp), except that ":port" means 127.0.0.1: a
// client has no wildcard. Fills error and returns false when the form is invalid.
bool resolve(const std::string& text, std::vector<Endpoint>& out, std::string& error) {
  out.clear();
  const auto address = common::parse_address(text, "127.0.0.1", error);
  if (!address) {
    error += " (expected host:port, :port, [v6]:port, a UNIX socket path or @name)";
    return false;
  }
  if (!address->is_unix) return common::resolve_address(*address, SOCK_STREAM, false, out, error);
  Endpoint endpoint;
  auto* un = reinterpret_cast<sockaddr_un*>(&endpoint.address);
  if (!common::unix_sockaddr(*address, *un, endpoint.length, error)) return false;
  endpoint.family = AF_UNIX;
  out.push_back(endpoint);
  return true;
}

// Waits until fd is ready for events; Io::timeout after timeout_ms without readiness.
Io wait_ready(int fd, short events, int timeout_ms, int& error) {
  pollfd entry{fd, events, 0};
  for (;;) {
    const int rc = ::poll(&entry, 1, timeout_ms);
    if (rc > 0) return Io::ok;
    if (rc == 0) return Io::timeout;
    if (errno != EINTR) {
      error = errno;
      return Io::failed;
    }
  }
}

// Non-blocking connect bounded by timeout_ms. Returns the fd, or -1 with `what` filled.
int connect_to(const Endpoint& endpoint, int timeout_ms, std::string& what) {
  const int fd = ::socket(endpoint.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    what = fmt::format("socket: {}", errno_text(errno));
    return -1;
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&endpoint.address), endpoint.length) == 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN && endpoint.family == AF_UNIX) {
      // A UNIX listener with a full backlog: retry until the deadline instead of failing at once.
      if (Clock::now() >= deadline) {
        what = fmt::format("connect: listen queue full for {} ms", timeout_ms);
        ::close(fd);
        return -1;
      }
      ::poll(nullptr, 0, 5);
      continue;
    }
    if (errno != EINPROGRESS) {
      what = fmt::format("connect: {}", errno_text(errno));
      ::close(fd);
      return -1;
    }
    int error = 0;
    const Io waited = wait_ready(fd, POLLOUT, timeout_ms, error);
    if (waited == Io::ok) {
      socklen_t length = sizeof error;
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
    }
    if (waited == Io::timeout) {
      what = fmt::format("connect: no answer within {} ms", timeout_ms);
    } else if (error != 0) {
      what = fmt::format("connect: {}", errno_text(error));
    }
    if (waited == Io::timeout || error != 0) {
      ::close(fd);
      return -1;
    }
    break;
  }
  if (endpoint.family != AF_UNIX) {
    int one = 1;  // requests are written whole; do not let Nagle hold the next one back
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

// Sends head then body in full (writev, no SIGPIPE).
Io send_all(int fd, std::string_view head, std::string_view body, int timeout_ms, int& error) {
  std::size_t done = 0;
  const std::size_t total = head.size() + body.size();
  while (done < total) {
    iovec parts[2];
    int count = 0;
    if (done < head.size()) {
      parts[count++] = {const_cast<char*>(head.data() + done), head.size() - done};
      if (!body.empty()) parts[count++] = {const_cast<char*>(body.data()), body.size()};
    } else {
      const std::size_t offset = done - head.size();
      parts[count++] = {const_cast<char*>(body.data() + offset), body.size() - offset};
    }
    msghdr message{};
    message.msg_iov = parts;
    message.msg_iovlen = static_cast<std::size_t>(count);
    const ssize_t sent = ::sendmsg(fd, &message, MSG_NOSIGNAL);
    if (sent >= 0) {
      done += static_cast<std::size_t>(sent);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      error = errno;
      return Io::failed;
    }
    const Io waited = wait_ready(fd, POLLOUT, timeout_ms, error);
    if (waited != Io::ok) return waited;
  }
  return Io::ok;
}

// Reads exactly `length` bytes into out (resized). `got` says how many arrived before eof/failure.
Io read_exact(int fd, char* out, std::size_t length, int timeout_ms, std::size_t& got, int& error) {
  got = 0;
  while (got < length) {
    const ssize_t n = ::recv(fd, out + got, length - got, 0);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) return Io::eof;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      error = errno;
      return Io::failed;
    }
    const Io waited = wait_ready(fd, POLLIN, timeout_ms, error);
    if (waited != Io::ok) return waited;
  }
  return Io::ok;
}

// A kept connection can be reused when nothing is pending on it: no EOF, no reset, no stray bytes.
bool still_open(int fd) {
  pollfd entry{fd, static_cast<short>(POLLIN | POLLRDHUP), 0};
  if (::poll(&entry, 1, 0) <= 0) return true;  // nothing happened (an EINTR here is harmless too)
  if ((entry.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) != 0) return false;
  char byte;
  const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);  // 0 = EOF, > 0 = bytes nobody asked for
}

// Vars exactly as uWSGI's remote client orders them (spec §7.4), plus keepalive=1 for our server.
void build_request(const MagicCall& call, bool keepalive, std::string& out) {
  out.clear();
  encode_header(out, kModifierCache, 0, kCacheMagic);
  append_var(out, "cmd", call.cmd);
  if (call.with_key) append_var(out, "key", call.key);
  if (call.with_value) {
    const std::string size = std::to_string(call.value.size());
    append_var(out, "size", size);
    if (call.expires > 0) append_var(out, "expires", std::to_string(call.expires));
    append_var(out, "size", size);  // uWSGI sends it twice; the later one wins on the server
  }
  append_var(out, "cache", call.cache);  // always present, empty = the default cache
  if (keepalive) append_var(out, "keepalive", "1");
  const std::size_t datasize = out.size() - kHeaderSize;
  if (datasize > 0xffff)
    throw std::length_error(fmt::format("request vars of {} bytes exceed 65535", datasize));
  out[1] = static_cast<char>(datasize & 0xff);
  out[2] = static_cast<char>(datasize >> 8);
}

const std::string* find_var(const MagicReply& reply, std::string_view name) {
  return server::find_var(reply.vars, name);
}

}  // namespace

struct CacheClient::Connection {
  int fd = -1;
  Clock::time_point last_reply{};
  ~Connection() {
    if (fd >= 0) ::close(fd);
  }
};

const std::string* find_var(const ReplyVars& vars, std::string_view name) {
  const std::string* found = nullptr;
  for (const auto& [key, value] : vars)
    if (key == name) found = &value;  // later occurrences win, as in uWSGI's parser
  return found;
}

CacheClient::CacheClient(std::string address, ClientOptions options)
    : address_(std::move(address)), options_(options) {}

CacheClient::~CacheClient() = default;

bool CacheClient::fail(std::string what) {
  last_error_ = fmt::format("cache server {}: {}", address_, what);
  return false;
}

// Opens a fresh connection into connection_. False with last_error_ set on failure.
bool CacheClient::open_connection() {
  connection_.reset();
  std::vector<Endpoint> endpoints;
  std::string error;
  if (!resolve(address_, endpoints, error)) return fail(error);
  for (const Endpoint& endpoint : endpoints) {  // every address of a name, first success wins
    const int fd = connect_to(endpoint, options_.timeout_ms, error);
    if (fd >= 0) {
      connection_ = std::make_unique<Connection>();
      connection_->fd = fd;
      return true;
    }
  }
  return fail(error);
}

// One magic exchange, with the persistent-mode bookkeeping (see client.hpp). Returns ok (status=ok
// reply), miss (no reply, or another status) or error.
ClientStatus CacheClient::exchange(const MagicCall& call, MagicReply& reply) {
  const std::string what =
      call.with_key ? fmt::format("{} {}", call.cmd, printable(call.key)) : std::string(call.cmd);
  std::string request;
  for (int attempt = 0; attempt < 2; ++attempt) {
    reply = MagicReply{};
    last_error_.clear();
    bool reused = false;
    if (connection_ != nullptr) {
      if (still_open(connection_->fd)) {
        reused = true;
      } else {
        // Closed while idle. Straight after a reply, only a server that closes after every reply
        // does that: it ignores keepalive (uWSGI). Later, it may be our idle timeout: keep asking.
        if (keepalive_ == KeepAlive::unknown && Clock::now() - connection_->last_reply < kQuickClose) {
          keepalive_ = KeepAlive::unsupported;
        }
        connection_.reset();
      }
    }
    const bool keepalive = options_.persistent && keepalive_ != KeepAlive::unsupported;
    try {
      build_request(call, keepalive, request);
    } catch (const std::length_error& error) {  // a key or cache name over 65535 bytes
      fail(fmt::format("{}: {}", what, error.what()));
      return ClientStatus::error;
    }
    if (!reused && !open_connection()) return ClientStatus::error;
    const int fd = connection_->fd;
    const int timeout = options_.timeout_ms;
    int error = 0;
    Io io = send_all(fd, request, call.with_value ? call.value : std::string_view{}, timeout, error);
    char head[kHeaderSize];
    std::size_t got = 0;
    if (io == Io::ok) io = read_exact(fd, head, kHeaderSize, timeout, got, error);
    // A reused connection that the server closed under us (idle timeout racing our request, or a
    // server that closes after each reply): nothing was answered, so retry once on a fresh one.
    const bool closed_under_us =
        got == 0 && (io == Io::eof || (io == Io::failed && (error == EPIPE || error == ECONNRESET)));
    if (reused && closed_under_us && attempt == 0) {
      if (keepalive_ == KeepAlive::unknown && Clock::now() - connection_->last_reply < kQuickClose) {
        keepalive_ = KeepAlive::unsupported;
      }
      connection_.reset();
      continue;
    }
    if (io == Io::eof && got == 0) {
      // No reply: a miss or a refusal in uWSGI's protocol. Our server answers every keepalive request,
      // so silence proves the server does not know the persistent mode.
      if (keepalive && keepalive_ == KeepAlive::unknown) keepalive_ = KeepAlive::unsupported;
      connection_.reset();
      last_error_ = fmt::format("cache server {}: {}: no reply (not found, or refused)", address_, what);
      return ClientStatus::miss;
    }
    if (io != Io::ok) {
      connection_.reset();
      if (io == Io::timeout) {
        fail(fmt::format("{}: no reply within {} ms", what, timeout));
      } else if (io == Io::eof) {
        fail(fmt::format("{}: reply cut short after {} of 4 header bytes", what, got));
      } else {
        fail(fmt::format("{}: {}", what, errno_text(error)));
      }
      return ClientStatus::error;
    }
    const PacketHeader header = decode_header(head);
    if (header.modifier1 != kModifierCache || header.modifier2 != kCacheMagic) {
      connection_.reset();
      fail(fmt::format(
          "{}: unexpected reply header {:02x} {:02x} {:02x} {:02x} (want modifier1 111, modifier2 17)", what,
          static_cast<unsigned char>(head[0]), static_cast<unsigned char>(head[1]),
          static_cast<unsigned char>(head[2]), static_cast<unsigned char>(head[3])));
      return ClientStatus::error;
    }
    std::string vars(header.datasize, '\0');
    io = read_exact(fd, vars.data(), vars.size(), timeout, got, error);
    if (io != Io::ok) {
      connection_.reset();
      fail(fmt::format("{}: reply vars cut short after {} of {} bytes ({})", what, got, vars.size(),
                       io == Io::timeout ? fmt::format("nothing more within {} ms", timeout)
                       : io == Io::eof   ? std::string("connection closed")
                                         : errno_text(error)));
      return ClientStatus::error;
    }
    VarsReader reader(vars);
    std::string_view key;
    std::string_view value;
    while (reader.next(key, value)) reply.vars.emplace_back(key, value);
    if (reader.failed()) {
      connection_.reset();
      fail(fmt::format("{}: malformed reply vars: {}", what, reader.error()));
      return ClientStatus::error;
    }
    if (const std::string* status = find_var(reply, "status")) reply.status = *status;
    if (const std::string* expires = find_var(reply, "expires")) {
      std::uint64_t at = 0;
      if (parse_decimal(*expires, at) && at <= static_cast<std::uint64_t>(INT64_MAX)) {
        reply.expires = static_cast<std::int64_t>(at);
      }
    }
    if (reply.status == "ok" && call.reads_body) {
      const std::string* size_text = find_var(reply, "size");
      std::uint64_t size = 0;
      if (size_text == nullptr || !parse_decimal(*size_text, size) || size > kMaxValue) {
        connection_.reset();
        fail(fmt::format("{}: reply has status=ok but {} size var", what,
                         size_text == nullptr ? std::string("no") : "an invalid " + printable(*size_text)));
        return ClientStatus::error;
      }
      reply.body.resize(size);
      io = read_exact(fd, reply.body.data(), size, timeout, got, error);
      if (io != Io::ok) {
        connection_.reset();
        fail(fmt::format("{}: value cut short after {} of {} bytes ({})", what, got, size,
                         io == Io::timeout ? fmt::format("nothing more within {} ms", timeout)
                         : io == Io::eof   ? std::string("connection closed")
                                           : errno_text(error)));
        return ClientStatus::error;
      }
    }
    // Only our server sends a status other than ok, and only in the persistent mode; an answer on a
    // reused connection proves it too.
    if (keepalive && (reused || (!reply.status.empty() && reply.status != "ok"))) {
      keepalive_ = KeepAlive::supported;
    }
    if (keepalive) {
      connection_->last_reply = Clock::now();
    } else {
      connection_.reset();
    }
    if (reply.status == "ok") return ClientStatus::ok;
    last_error_ = fmt::format("cache server {}: {}: status={}", address_, what, printable(reply.status));
    return ClientStatus::miss;
  }
  return ClientStatus::error;  // not reached: the second attempt always returns
}

ClientStatus CacheClient::dump(std::string_view cache, ReplyVars& vars, std::string& image,
                               std::uint64_t max_image) {
  vars.clear();
  image.clear();
  last_error_.clear();
  if (cache.size() > 0xffff) {
    fail(fmt::format("dump: cache name of {} bytes exceeds 65535", cache.size()));
    return ClientStatus::error;
  }
  if (!open_connection()) return ClientStatus::error;
  const std::unique_ptr<Connection> connection = std::move(connection_);  // never kept: the server closes
  const int fd = connection->fd;
  const int timeout = options_.timeout_ms;
  std::string request;
  encode_header(request, kModifierCache, static_cast<std::uint16_t>(cache.size()), kCacheDump);
  int error = 0;
  std::size_t got = 0;
  char head[kHeaderSize];
  Io io = send_all(fd, request, cache, timeout, error);
  if (io == Io::ok) io = read_exact(fd, head, kHeaderSize, timeout, got, error);
  if (io == Io::eof && got == 0) {
    last_error_ =
        fmt::format("cache server {}: dump {}: no reply (unknown cache)", address_, printable(cache));
    return ClientStatus::miss;
  }
  const auto io_problem = [&](std::string_view what) {
    fail(fmt::format("dump: {} ({})", what,
                     io == Io::timeout ? fmt::format("nothing within {} ms", timeout)
                     : io == Io::eof   ? std::string("connection closed")
                                       : errno_text(error)));
    return ClientStatus::error;
  };
  if (io != Io::ok) return io_problem(fmt::format("reply header cut short after {} bytes", got));
  const PacketHeader header = decode_header(head);
  if (header.modifier1 != kModifierCache || header.modifier2 != kCacheDumpReply) {
    fail(fmt::format(
        "dump: unexpected reply header {:02x} {:02x} {:02x} {:02x} (want modifier1 111, modifier2 7)",
        static_cast<unsigned char>(head[0]), static_cast<unsigned char>(head[1]),
        static_cast<unsigned char>(head[2]), static_cast<unsigned char>(head[3])));
    return ClientStatus::error;
  }
  std::string block(header.datasize, '\0');
  io = read_exact(fd, block.data(), block.size(), timeout, got, error);
  if (io != Io::ok)
    return io_problem(fmt::format("reply vars cut short after {} of {} bytes", got, block.size()));
  VarsReader reader(block);
  std::string_view key, value;
  while (reader.next(key, value)) vars.emplace_back(key, value);
  if (reader.failed()) {
    fail(fmt::format("dump: malformed reply vars: {}", reader.error()));
    return ClientStatus::error;
  }
  // The image runs until the server closes.
  constexpr std::size_t kChunk = 1 << 20;
  for (;;) {
    const std::size_t at = image.size();
    if (at > max_image) {
      fail(fmt::format("dump: image larger than the {} bytes allowed", max_image));
      return ClientStatus::error;
    }
    image.resize(at + kChunk);
    io = read_exact(fd, image.data() + at, kChunk, timeout, got, error);
    image.resize(at + got);
    if (io == Io::eof) break;
    if (io != Io::ok) return io_problem(fmt::format("image cut short after {} bytes", image.size()));
  }
  if (image.size() > max_image) {
    fail(fmt::format("dump: image of {} bytes, larger than the {} bytes allowed", image.size(), max_image));
    return ClientStatus::error;
  }
  return ClientStatus::ok;
}

ClientStatus CacheClient::get(std::string_view key, std::string& value, std::string_view cache,
                              std::int64_t* expires_at) {
  MagicCall call{.cmd = "get", .key = key, .cache = cache, .reads_body = true};
  MagicReply reply;
  value.clear();
  if (expires_at != nullptr) *expires_at = 0;
  const ClientStatus status = exchange(call, reply);
  if (status != ClientStatus::ok) return status;
  if (reply.body.empty()) {
    last_error_ = fmt::format("cache server {}: get {}: size 0 (a miss)", address_, printable(key));
    return ClientStatus::miss;  // uWSGI's client treats an empty value as a miss too
  }
  value = std::move(reply.body);
  if (expires_at != nullptr) *expires_at = reply.expires;
  return ClientStatus::ok;
}

ClientStatus CacheClient::exists(std::string_view key, std::string_view cache) {
  MagicCall call{.cmd = "exists", .key = key, .cache = cache};
  MagicReply reply;
  return exchange(call, reply);
}

ClientStatus CacheClient::set(std::string_view key, std::string_view value, std::int64_t expires,
                              std::string_view cache) {
  MagicCall call{
      .cmd = "set", .key = key, .cache = cache, .value = value, .expires = expires, .with_value = true};
  MagicReply reply;
  return exchange(call, reply);
}

ClientStatus CacheClient::update(std::string_view key, std::string_view value, std::int64_t expires,
                                 std::string_view cache) {
  MagicCall call{
      .cmd = "update", .key = key, .cache = cache, .value = value, .expires = expires, .with_value = true};
  MagicReply reply;
  return exchange(call, reply);
}

ClientStatus CacheClient::del(std::string_view key, std::string_view cache) {
  MagicCall call{.cmd = "del", .key = key, .cache = cache};
  MagicReply reply;
  return exchange(call, reply);
}

ClientStatus CacheClient::clear(std::string_view cache) {
  MagicCall call{.cmd = "clear", .cache = cache, .with_key = false};
  MagicReply reply;
  return exchange(call, reply);
}

ClientStatus CacheClient::math(std::string_view cmd, std::string_view key, std::int64_t operand,
                               std::int64_t expires, std::string_view cache, std::int64_t* result) {
  char operand_bytes[8];
  auto bits = static_cast<std::uint64_t>(operand);
  for (char& byte : operand_bytes) {  // little-endian whatever the host
    byte = static_cast<char>(bits & 0xff);
    bits >>= 8;
  }
  MagicCall call{.cmd = cmd,
                 .key = key,
                 .cache = cache,
                 .value = std::string_view(operand_bytes, sizeof operand_bytes),
                 .expires = expires,
                 .with_value = true};
  MagicReply reply;
  const ClientStatus status = exchange(call, reply);
  if (status != ClientStatus::ok || result == nullptr) return status;
  const std::string* number = find_var(reply, "value");
  std::int64_t parsed = 0;
  if (number == nullptr ||
      std::from_chars(number->data(), number->data() + number->size(), parsed).ec != std::errc()) {
    fail(fmt::format("{}: the reply has no decimal value var", cmd));
    return ClientStatus::error;
  }
  *result = parsed;
  return ClientStatus::ok;
}

ClientStatus CacheClient::keys(std::vector<std::string>& out, std::string_view cache) {
  out.clear();
  MagicCall call{.cmd = "keys", .cache = cache, .with_key = false, .reads_body = true};
  MagicReply reply;
  const ClientStatus status = exchange(call, reply);
  if (status == ClientStatus::error) return status;
  if (status == ClientStatus::miss) {
    fail(fmt::format("keys: not supported by this server (no status=ok reply to cmd=keys{})",
                     reply.status.empty() ? "" : ", got status=" + printable(reply.status)));
    return ClientStatus::error;
  }
  ArrayReader reader(reply.body);
  std::string_view item;
  while (reader.next(item)) out.emplace_back(item);
  if (reader.failed()) {
    out.clear();
    fail(fmt::format("keys: malformed key list: {}", reader.error()));
    return ClientStatus::error;
  }
  if (const std::string* count = find_var(reply, "count")) {
    std::uint64_t expected = 0;
    if (!parse_decimal(*count, expected) || expected != out.size()) {
      fail(fmt::format("keys: count var says {} but the list holds {} keys", printable(*count), out.size()));
      out.clear();
      return ClientStatus::error;
    }
  }
  return ClientStatus::ok;
}

ClientStatus CacheClient::stats(ReplyVars& out, std::string_view cache) {
  out.clear();
  MagicCall call{.cmd = "stats", .cache = cache, .with_key = false};
  MagicReply reply;
  const ClientStatus status = exchange(call, reply);
  if (status == ClientStatus::error) return status;
  if (status == ClientStatus::miss) {
    fail(fmt::format("stats: not supported by this server (no status=ok reply to cmd=stats{})",
                     reply.status.empty() ? "" : ", got status=" + printable(reply.status)));
    return ClientStatus::error;
  }
  for (auto& pair : reply.vars) {
    if (pair.first != "status") out.push_back(std::move(pair));
  }
  return ClientStatus::ok;
}

}  // namespace server
