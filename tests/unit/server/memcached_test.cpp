// server::memcached::Session against a real cache: replies, framing across partial reads (a command
// runs only once all of it is there, whatever the split), pipelining, swallowed blocks, noreply, the
// closes, and incr/decr arithmetic. Byte-for-byte agreement with memcached itself is
// tests/integration/test_memcached_compat.py's job.
#include "server/memcached.hpp"

#include <catch2/catch.hpp>
#include <memory>
#include <string>

#include "cache/cache.hpp"

using server::memcached::Counters;
using server::memcached::Progress;
using server::memcached::Session;
using server::memcached::Settings;

namespace {

struct Fixture {
  std::unique_ptr<cache::Cache> cache;
  Counters counters;
  Fixture() {
    cache::Geometry g;
    g.items = 1000;
    g.blocksize = 4096;
    g.keysize = 512;
    cache = cache::Cache::create(g);
  }
  Session session(std::uint32_t max_key = 250) { return Session(Settings{cache.get(), max_key, &counters}); }
};

// Feeds `input` in pieces of `step` bytes as a connection would, keeping unconsumed bytes.
std::string run(Session& s, const std::string& input, std::size_t step, bool* closed = nullptr) {
  std::string buffer, out;
  for (std::size_t at = 0; at < input.size(); at += step) {
    buffer.append(input, at, step);
    Progress p = s.execute(buffer, out);
    buffer.erase(0, p.consumed);
    if (p.close) {
      if (closed != nullptr) *closed = true;
      break;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("storage and retrieval commands") {
  Fixture f;
  Session s = f.session();
  const std::string input =
      "set a 5 0 3\r\nabc\r\nget a b\r\nadd a 0 0 1\r\nx\r\nreplace a 6 0 2\r\nxy\r\nappend a 0 0 1\r\n+\r\n"
      "prepend a 0 0 1\r\n-\r\nget a\r\ndelete a\r\ndelete a\r\nset e 0 0 0\r\n\r\nget e\r\n";
  CHECK(run(s, input, input.size()) ==
        "STORED\r\nVALUE a 5 3\r\nabc\r\nEND\r\nNOT_STORED\r\nSTORED\r\nSTORED\r\nSTORED\r\n"
        "VALUE a 6 4\r\n-xy+\r\nEND\r\nDELETED\r\nNOT_FOUND\r\nSTORED\r\nVALUE e 0 0\r\n\r\nEND\r\n");
}

TEST_CASE("a command runs once all of it arrived, whatever the split") {
  const std::string input =
      "set k 1 0 10\r\n0123456789\r\ngets k\r\nincr n 1\r\nset n 0 0 2\r\n99\r\nincr n 1\r\ndecr n 98\r\n"
      "get n\r\nmg k v f\r\nms k 2 T0 F3\r\nhi\r\nmg k v f s\r\nmn\r\n";
  Fixture whole;
  Session a = whole.session();
  const std::string expected = run(a, input, input.size());
  for (std::size_t step : {1, 2, 3, 7, 13}) {
    Fixture f;
    Session s = f.session();
    INFO("pieces of " << step);
    // The cas values are the same in two fresh caches written in the same order.
    CHECK(run(s, input, step) == expected);
  }
  CHECK(expected.find("VALUE n 0 3\r\n2  \r\n") != std::string::npos);  // 100 - 98: padded as memcached does
}

TEST_CASE("incr wraps at 2^64, decr stops at 0, non-numbers are refused") {
  Fixture f;
  Session s = f.session();
  CHECK(
      run(s,
          "set n 0 0 20\r\n18446744073709551615\r\nincr n 2\r\ndecr n 5\r\nset t 0 0 2\r\nab\r\nincr t 1\r\n"
          "incr n x\r\n",
          1000) ==
      "STORED\r\n1\r\n0\r\nSTORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
      "CLIENT_ERROR invalid numeric delta argument\r\n");
}

TEST_CASE("cas: stored, exists, not found") {
  Fixture f;
  Session s = f.session();
  std::string out = run(s, "set k 0 0 1\r\na\r\ngets k\r\n", 1000);
  const std::string cas =
      out.substr(out.find("VALUE k 0 1 ") + 12, out.find("\r\na\r\n") - out.find("VALUE k 0 1 ") - 12);
  CHECK(run(s, "cas k 0 0 1 " + cas + "\r\nb\r\ncas k 0 0 1 " + cas + "\r\nc\r\ncas x 0 0 1 1\r\nd\r\n",
            1000) == "STORED\r\nEXISTS\r\nNOT_FOUND\r\n");
}

TEST_CASE("a too large block is refused and swallowed, even split") {
  Fixture f;
  Session s = f.session();
  const std::string big(5000, 'v');
  for (std::size_t step : {5001, 100, 1}) {
    INFO("pieces of " << step);
    CHECK(run(s, "set k 0 0 1\r\na\r\nset k 0 0 5000\r\n" + big + "\r\nget k\r\n", step) ==
          "STORED\r\nSERVER_ERROR object too large for cache\r\nEND\r\n");
  }
}

TEST_CASE("bad input gets memcached's errors; nothing half-written is visible") {
  Fixture f;
  Session s = f.session();
  CHECK(run(s, "bogus\r\n\r\nset k 0 0 -1\r\nset k 0 0 3\r\nabcd\r\nget k\r\n", 1000) ==
        "ERROR\r\nERROR\r\nCLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad data chunk\r\nERROR\r\n"
        "END\r\n");
  // Half a block: not stored until the rest comes.
  std::string out;
  Progress p = s.execute("set k 0 0 10\r\n01234", out);
  CHECK(p.consumed == 0);
  CHECK(p.want == 26);
  std::string value;
  CHECK(f.cache->get("k", value) == cache::Status::miss);
}

TEST_CASE("key limit: 250 by default, --memcached-keysize otherwise") {
  Fixture f;
  Session s = f.session();
  const std::string k250(250, 'k'), k251(251, 'k');
  CHECK(run(s, "set " + k250 + " 0 0 1\r\nx\r\nset " + k251 + " 0 0 1\r\nx\r\n", 1000) ==
        "STORED\r\nCLIENT_ERROR bad command line format\r\nERROR\r\n");
  Session wide = f.session(300);
  CHECK(run(wide, "set " + k251 + " 0 0 1\r\nx\r\n", 1000) == "STORED\r\n");
}

TEST_CASE("noreply, quit, long lines and binary requests") {
  Fixture f;
  Session s = f.session();
  CHECK(run(s, "set q 0 0 1 noreply\r\nq\r\nincr q 1 noreply\r\ndelete q noreply\r\nget q\r\n", 1000) ==
        "END\r\n");
  bool closed = false;
  CHECK(run(s, "version\r\nquit\r\nversion\r\n", 1000, &closed) == "VERSION 1.6.18-ucached\r\n");
  CHECK(closed);
  closed = false;
  Session t = f.session();
  CHECK(run(t, std::string(3000, 'x'), 1000, &closed).empty());
  CHECK(closed);
  closed = false;
  Session u = f.session();
  CHECK(run(u, std::string("\x80\x00\x00\x01", 4), 4, &closed) ==
        "CLIENT_ERROR binary protocol is not supported\r\n");
  CHECK(closed);
}

TEST_CASE("exptime: relative, absolute above 30 days, negative") {
  CHECK(server::memcached::expires_in_from_exptime(0, 1'700'000'000) == 0);
  CHECK(server::memcached::expires_in_from_exptime(100, 1'700'000'000) == 100);
  CHECK(server::memcached::expires_in_from_exptime(-1, 1'700'000'000) < 0);
  CHECK(server::memcached::expires_in_from_exptime(1'700'000'100, 1'700'000'000) == 100);
  CHECK(server::memcached::expires_in_from_exptime(1'600'000'000, 1'700'000'000) < 0);
  CHECK(server::memcached::expires_in_from_exptime(2'592'000, 1'700'000'000) == 2'592'000);
}
