// The cache client library: speaks modifier1 111 / modifier2 17 (the "magic" interface uWSGI's own
// remote cache calls use), so it works against this server and against uWSGI 2.0. Used by the command
// line tool (`server cache ...`) and by the Python host for `name@host:port` cache arguments.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace server {

namespace client_detail {
struct MagicCall;
struct MagicReply;
}  // namespace client_detail

enum class ClientStatus {
  ok,     // hit / done
  miss,   // no reply (uWSGI), or a status other than ok (our persistent mode): a miss or a refused
          // write (uWSGI cannot tell them apart)
  error,  // connection or protocol failure; last_error() says what
};

// A reply's vars, in order; find_var gives the value of the last occurrence (uWSGI's parser rule),
// nullptr when absent.
using ReplyVars = std::vector<std::pair<std::string, std::string>>;
const std::string* find_var(const ReplyVars& vars, std::string_view name);

struct ClientOptions {
  int timeout_ms = 4000;  // connect and each read/write (uWSGI's --socket-timeout default)
  // Keep one connection for the next requests when the server offers our persistent mode (the var
  // keepalive=1 is sent; our server then keeps the connection and answers misses with a framed
  // status=notfound/error). A server that closes after replying (uWSGI ignores the var) is noted once
  // and then spoken to with one connection per request and no keepalive var. A kept connection the
  // server closed while idle is replaced transparently, once per request.
  bool persistent = true;
};

class CacheClient {
 public:
  // address: "host:port", ":port" (127.0.0.1), "[v6]:port", or a UNIX socket path (anything starting
  // with / . or @, or without a colon; "@name" = abstract namespace). Nothing happens until a call.
  explicit CacheClient(std::string address, ClientOptions options = {});
  ~CacheClient();
  CacheClient(const CacheClient&) = delete;
  CacheClient& operator=(const CacheClient&) = delete;

  // cache: "" = the server's default cache. expires: seconds from now, <= 0 = never (the var is only
  // sent when > 0, as uWSGI does). miss = not found, or a write the server refused (key exists for
  // set, cache full, value too big or empty, unknown cache); get also treats a 0-byte value as a miss.
  // last_error() is set for error (and says why for a miss too when the server said it).
  ClientStatus get(std::string_view key, std::string& value, std::string_view cache = {},
                   std::int64_t* expires_at = nullptr);
  ClientStatus exists(std::string_view key, std::string_view cache = {});
  ClientStatus set(std::string_view key, std::string_view value, std::int64_t expires = 0,
                   std::string_view cache = {});
  ClientStatus update(std::string_view key, std::string_view value, std::int64_t expires = 0,
                      std::string_view cache = {});
  ClientStatus del(std::string_view key, std::string_view cache = {});
  ClientStatus clear(std::string_view cache = {});

  // Our server's extensions (uWSGI has no such wire command): cmd=keys / cmd=stats. A server without
  // them (no status=ok reply) gives error with last_error() saying "not supported by this server".
  ClientStatus keys(std::vector<std::string>& out, std::string_view cache = {});
  ClientStatus stats(ReplyVars& out, std::string_view cache = {});
  // cmd: "inc", "dec", "mul" or "div", applied atomically by our server (the operand travels as the
  // 8-byte little-endian body, as uWSGI's client sends it); result receives the new number. uWSGI
  // does not know these commands and closes without a reply: miss (callers then fall back).
  ClientStatus math(std::string_view cmd, std::string_view key, std::int64_t operand,
                    std::int64_t expires = 0, std::string_view cache = {}, std::int64_t* result = nullptr);

  // modifier2 6: the cache's dump (uWSGI's --cache-sync request), on a connection of its own. vars gets
  // the reply's vars (items, blocksize; ours adds format, count, bytes), image what follows until the
  // server closes. miss = no reply (unknown cache); error when the image exceeds max_image bytes.
  ClientStatus dump(std::string_view cache, ReplyVars& vars, std::string& image, std::uint64_t max_image);

  const std::string& address() const { return address_; }
  const std::string& last_error() const { return last_error_; }

 private:
  struct Connection;
  using MagicCall = client_detail::MagicCall;
  using MagicReply = client_detail::MagicReply;
  // What this server showed about the persistent mode.
  enum class KeepAlive : std::uint8_t { unknown, supported, unsupported };

  ClientStatus exchange(const MagicCall& call, MagicReply& reply);
  bool open_connection();
  bool fail(std::string what);  // sets last_error_ = "cache server <address>: <what>"

  std::string address_;
  ClientOptions options_;
  std::string last_error_;
  std::unique_ptr<Connection> connection_;  // the kept connection in persistent mode
  KeepAlive keepalive_ = KeepAlive::unknown;
};

// `server cache COMMAND ...`: the command-line tool. Receives only the arguments AFTER the word
// "cache": argv[0] is the command (e.g. "get"), argc counts them (0 = no command: usage error), and
// argv[argc] need not be a null pointer. main() calls it as run_cache_command_line(argc - 2, argv + 2)
// when argv[1] is "cache". Returns the exit status: 0 hit/ok, 1 miss/refused, 2 error or usage error
// (with a message on stderr); --help prints the usage to stdout and returns 0.
int run_cache_command_line(int argc, const char* const argv[]);

}  // namespace server
