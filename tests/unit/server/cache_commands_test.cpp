// Every modifier1 111 command's exact reply bytes against a real cache::Cache, using the byte examples
// of uwsgi-cache-examples.md §1 (with the intended headers where we fix uWSGI 2.0.21's bugs).
#include <catch2/catch.hpp>
#include <cstdlib>
#include <ctime>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "server/cache_dump.hpp"
#include "server/dispatcher.hpp"
#include "server/udp_sync.hpp"
#include "wire.hpp"

using namespace server;
using wire::bytes;
using wire::hex;

namespace {

inline constexpr std::int64_t kNow = 1795642349;  // examples §1.7: update expires 100 → 1795642449

// The examples' setup A: `--cache 10` (default) plus `--cache2 name=small,items=4,blocksize=16,keysize=8`.
struct Server {
  cache::CacheSet caches;
  cache::Cache* main = nullptr;
  cache::Cache* small = nullptr;
  Dispatcher dispatcher{caches, nullptr};
  Reply reply;
  std::string note;

  Server() {
    cache::Geometry main_geometry;
    main_geometry.name = "default";
    main_geometry.items = 10;
    main = &caches.add(cache::Cache::create(main_geometry));
    cache::Geometry small_geometry;
    small_geometry.name = "small";
    small_geometry.items = 4;
    small_geometry.blocksize = 16;
    small_geometry.keysize = 8;
    small = &caches.add(cache::Cache::create(small_geometry));
    for (cache::Cache* cache : {main, small}) cache->set_clock([] { return kNow; });
    REQUIRE(main->set("k1", "value1") == cache::Status::ok);
  }

  // Sends one complete request (framed as the worker would) and returns head + body as one string.
  std::string send(std::string_view packet) {
    const Frame frame = frame_request(packet, FrameLimits{.buffer_size = 4096, .max_cache_body = 1 << 20});
    REQUIRE(frame.status == FrameStatus::complete);
    Request request;
    request.header = frame.header;
    request.payload = packet.substr(kHeaderSize, frame.header.datasize);
    request.body = packet.substr(frame.payload_end, frame.total - frame.payload_end);
    dispatcher.handle(request, reply, &note);
    return reply.head + reply.body;
  }
  std::string value_of(cache::Cache& cache, std::string_view key) {
    std::string value;
    return cache.get(key, value) == cache::Status::ok ? value : std::string("<miss>");
  }
};

const std::string kStatusOk =
    bytes({0x6f, 0x0c, 0x00, 0x11, 0x06, 0x00, 0x73, 0x74, 0x61, 0x74, 0x75, 0x73, 0x02, 0x00, 0x6f, 0x6b});

}  // namespace

TEST_CASE("mod2 0 get: intended header [111, vallen, 0] + value", "[cache-commands]") {
  Server server;
  CHECK(hex(server.send(bytes({0x6f, 0x02, 0x00, 0x00, 0x6b, 0x31}))) == "6f 06 00 00 76 61 6c 75 65 31");
  CHECK(server.reply.close_after);
  CHECK(server.note.empty());

  SECTION("miss: no reply, no note") {
    CHECK(server.send(bytes({0x6f, 0x05, 0x00, 0x00, 0x6e, 0x6f, 0x6b, 0x65, 0x79})).empty());
    CHECK(server.note.empty());
  }
  SECTION("a 65536-byte value: the 16-bit length wraps to 0, as the intended code does") {
    REQUIRE(server.main->set("big", std::string(65536, 'b')) == cache::Status::ok);
    const std::string reply = server.send(wire::packet(111, 0, "big"));
    CHECK(reply.size() == 4 + 65536);
    CHECK(hex(reply.substr(0, 4)) == "6f 00 00 00");
  }
  SECTION("a hit reuses the reply buffers (no allocation once they have grown)") {
    const std::string request = wire::packet(111, 0, "k1");
    server.send(request);
    const char* head = server.reply.head.data();
    const char* body = server.reply.body.data();
    server.send(request);
    CHECK(server.reply.head.data() == head);
    CHECK(server.reply.body.data() == body);
  }
}

TEST_CASE("mod2 1 set from an array: never replies, never overwrites", "[cache-commands]") {
  Server server;
  CHECK(
      server.send(bytes({0x6f, 0x0a, 0x00, 0x01, 0x02, 0x00, 0x6b, 0x32, 0x04, 0x00, 0x76, 0x61, 0x6c, 0x32}))
          .empty());
  CHECK(server.note.empty());
  CHECK(server.value_of(*server.main, "k2") == "val2");
  CHECK(server
            .send(bytes(
                {0x6f, 0x0b, 0x00, 0x01, 0x02, 0x00, 0x6b, 0x32, 0x05, 0x00, 0x6f, 0x74, 0x68, 0x65, 0x72}))
            .empty());
  CHECK(server.value_of(*server.main, "k2") == "val2");
  // set-if-absent on a present key is the command's normal outcome (clients use it that way): no log line
  CHECK(server.note.empty());

  SECTION("zero-length items are skipped; a third item is ignored; the rest of the block is not read") {
    std::string array;
    append_array_item(array, "");
    append_array_item(array, "k3");
    append_array_item(array, "");
    append_array_item(array, "v3");
    append_array_item(array, "ignored");
    array += bytes({9});  // garbage after the third item: never looked at
    CHECK(server.send(wire::packet(111, 1, array)).empty());
    CHECK(server.note.empty());
    CHECK(server.value_of(*server.main, "k3") == "v3");
  }
  SECTION("one item only, or a truncated item: nothing stored, a note") {
    std::string array;
    append_array_item(array, "k4");
    CHECK(server.send(wire::packet(111, 1, array)).empty());
    CHECK(server.note == "cache set (modifier2 1): needs a key and a value, got 1 non-empty item(s)");
    CHECK(server.send(wire::packet(111, 1, array + bytes({5, 0, 'v'}))).empty());
    CHECK(server.note ==
          "cache set (modifier2 1): array: item length 5 at offset 4 runs past the end of the 7-byte block");
    CHECK(server.value_of(*server.main, "k4") == "<miss>");
  }
}

TEST_CASE("mod2 2 delete: never replies", "[cache-commands]") {
  Server server;
  CHECK(server.send(bytes({0x6f, 0x02, 0x00, 0x02, 0x6b, 0x31})).empty());
  CHECK(server.value_of(*server.main, "k1") == "<miss>");
  CHECK(server.send(bytes({0x6f, 0x02, 0x00, 0x02, 0x6b, 0x31})).empty());
  CHECK(server.note.empty());  // deleting an absent key is a miss, not a failure
}

TEST_CASE("mod2 3/4 dictionary get: hits serve the raw value (fixing 2.0.21)", "[cache-commands]") {
  Server server;
  const std::string not_found =
      "HTTP/1.0 404 Not Found\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\nNot Found";
  for (const int command : {3, 4}) {
    INFO("modifier2 " << command);
    // examples §1.4, where 2.0.21 answers nothing / the 404 page although k1 exists
    CHECK(server.send(bytes({0x6f, 0x09, 0x00, command, 0x03, 0x00, 0x6b, 0x65, 0x79, 0x02, 0x00, 0x6b,
                             0x31})) == "value1");
    CHECK(server.send(bytes({0x6f, 0x09, 0x00, command, 0x03, 0x00, 0x67, 0x65, 0x74, 0x02, 0x00, 0x6b,
                             0x31})) == "value1");
    CHECK(server.send(wire::packet(111, command, wire::vars({{"key", "nokey"}}))).empty());
    CHECK(server.send(wire::packet(111, command, wire::vars({{"get", "nokey"}}))) == not_found);
    CHECK(hex(not_found.substr(0, 8)) == "48 54 54 50 2f 31 2e 30");
    CHECK(server.note.empty());
  }
  SECTION("nginx-style vars: other vars and empty values are ignored, matching vars served in order") {
    const std::string vars = wire::vars({{"QUERY_STRING", ""},
                                         {"key", ""},
                                         {"HTTP_HOST", "k1"},
                                         {"key", "k1"},
                                         {"get", "nokey"},
                                         {"SERVER_NAME", ""}});
    // uWSGI's writer starts the 404 page only while nothing was written: after a value, a get miss adds
    // nothing
    CHECK(server.send(wire::packet(111, 3, vars)) == "value1");
  }
  SECTION("malformed vars: what came before is served, a note names the offset") {
    CHECK(server.send(wire::packet(111, 3, wire::vars({{"key", "k1"}}) + bytes({0, 0}))) == "value1");
    CHECK(server.note == "cache dict get (modifier2 3): vars: zero-length key at offset 9");
  }
}

TEST_CASE("mod2 5 stream get: [111,0,0,1] + value, or [111,0,0,0]", "[cache-commands]") {
  Server server;
  CHECK(hex(server.send(bytes({0x6f, 0x02, 0x00, 0x05, 0x6b, 0x31}))) == "6f 00 00 01 76 61 6c 75 65 31");
  CHECK(hex(server.send(bytes({0x6f, 0x05, 0x00, 0x05, 0x6e, 0x6f, 0x6b, 0x65, 0x79}))) == "6f 00 00 00");
  CHECK(server.note.empty());
}

TEST_CASE("mod2 6 dump: [111, L, 7] + vars + our item image", "[cache-commands]") {
  Server server;
  REQUIRE(server.main->update("m1", "HELLO", 100) == cache::Status::ok);

  const auto dump = [&](std::string_view name, std::map<std::string, std::string>& vars,
                        std::map<std::string, std::pair<std::string, std::uint64_t>>& items) {
    const std::string reply = server.send(wire::packet(111, 6, name));
    REQUIRE(reply.size() >= 4);
    const PacketHeader header = decode_header(reply.data());
    CHECK(header.modifier1 == 111);
    CHECK(header.modifier2 == 7);
    const std::string_view block = std::string_view(reply).substr(4, header.datasize);
    REQUIRE(parse_vars(block, [&](std::string_view k, std::string_view v) { vars[std::string(k)] = v; }));
    const std::string_view image = std::string_view(reply).substr(4 + header.datasize);
    CHECK(vars["bytes"] == std::to_string(image.size()));
    std::string error;
    CHECK(parse_dump_image(
        image,
        [&](std::string_view k, std::string_view v, std::uint64_t expires) {
          items[std::string(k)] = {std::string(v), expires};
        },
        &error));
    CHECK(error.empty());
  };

  SECTION("empty payload: the default cache; the vars start like uWSGI's") {
    std::map<std::string, std::string> vars;
    std::map<std::string, std::pair<std::string, std::uint64_t>> items;
    dump("", vars, items);
    CHECK(hex(server.reply.head.substr(4, 29)) ==
          "05 00 69 74 65 6d 73 02 00 31 30 09 00 62 6c 6f 63 6b 73 69 7a 65 05 00 36 35 35 33 36");
    CHECK(vars["format"] == "ucached-items-1");
    CHECK(vars["keysize"] == "2048");
    CHECK(vars["count"] == "2");
    CHECK(items.size() == 2);
    CHECK(items["k1"] == std::pair<std::string, std::uint64_t>{"value1", 0});
    CHECK(items["m1"] == std::pair<std::string, std::uint64_t>{"HELLO", kNow + 100});
  }
  SECTION("a named cache") {
    REQUIRE(server.small->set("ab", "XYZ") == cache::Status::ok);
    std::map<std::string, std::string> vars;
    std::map<std::string, std::pair<std::string, std::uint64_t>> items;
    dump("small", vars, items);
    CHECK(hex(server.reply.head.substr(0, 29)) ==
          "6f " + fmt::format("{:02x}", static_cast<unsigned char>(server.reply.head[1])) +
              " 00 07 05 00 69 74 65 6d 73 01 00 34 09 00 62 6c 6f 63 6b 73 69 7a 65 02 00 31 36");
    CHECK(items.size() == 1);
    CHECK(items["ab"].first == "XYZ");
  }
  SECTION("unknown cache: no reply, a note") {
    CHECK(server.send(bytes({0x6f, 0x06, 0x00, 0x06, 0x6e, 0x6f, 0x73, 0x75, 0x63, 0x68})).empty());
    CHECK(server.note == "cache dump: unknown cache \"nosuch\"");
  }
}

TEST_CASE("mod2 17 magic interface: examples §1.7 byte for byte", "[cache-commands][magic]") {
  Server server;

  SECTION("get hit, miss; exists hit, miss") {
    CHECK(hex(server.send(bytes({0x6f, 0x13, 0x00, 0x11, 0x03, 0x00, 0x63, 0x6d, 0x64, 0x03, 0x00, 0x67,
                                 0x65, 0x74, 0x03, 0x00, 0x6b, 0x65, 0x79, 0x02, 0x00, 0x6b, 0x31}))) ==
          "6f 15 00 11 06 00 73 74 61 74 75 73 02 00 6f 6b 04 00 73 69 7a 65 01 00 36 76 61 6c 75 65 31");
    CHECK(server.reply.body == "value1");  // the value travels in the body buffer, after the head
    CHECK(server
              .send(bytes({0x6f, 0x16, 0x00, 0x11, 0x03, 0x00, 0x63, 0x6d, 0x64, 0x03, 0x00, 0x67, 0x65,
                           0x74, 0x03, 0x00, 0x6b, 0x65, 0x79, 0x05, 0x00, 0x6e, 0x6f, 0x6b, 0x65, 0x79}))
              .empty());
    CHECK(server.note.empty());
    CHECK(server.send(bytes({0x6f, 0x16, 0x00, 0x11, 0x03, 0x00, 0x63, 0x6d, 0x64,
                             0x06, 0x00, 0x65, 0x78, 0x69, 0x73, 0x74, 0x73, 0x03,
                             0x00, 0x6b, 0x65, 0x79, 0x02, 0x00, 0x6b, 0x31})) == kStatusOk);
    CHECK(server.send(wire::packet(111, 17, wire::vars({{"cmd", "exists"}, {"key", "nokey"}}))).empty());
  }
  SECTION("set, set again, update with expiry, get with expires, del, del again") {
    const std::string set =
        bytes({0x6f, 0x1c, 0x00, 0x11, 0x03, 0x00, 0x63, 0x6d, 0x64, 0x03, 0x00, 0x73, 0x65,
               0x74, 0x03, 0x00, 0x6b, 0x65, 0x79, 0x02, 0x00, 0x6d, 0x31, 0x04, 0x00, 0x73,
               0x69, 0x7a, 0x65, 0x01, 0x00, 0x35, 0x68, 0x65, 0x6c, 0x6c, 0x6f});
    CHECK(server.send(set) == kStatusOk);
    CHECK(server.value_of(*server.main, "m1") == "hello");
    std::string again = set;
    again.replace(again.size() - 5, 5, "HELLO");
    CHECK(server.send(again).empty());
    CHECK(server.note.empty());  // set on a present key: the normal outcome of set, no log line

    const std::string update =
        bytes({0x6f, 0x2d, 0x00, 0x11, 0x03, 0x00, 0x63, 0x6d, 0x64, 0x06, 0x00, 0x75, 0x70, 0x64,
               0x61, 0x74, 0x65, 0x03, 0x00, 0x6b, 0x65, 0x79, 0x02, 0x00, 0x6d, 0x31, 0x04, 0x00,
               0x73, 0x69, 0x7a, 0x65, 0x01, 0x00, 0x35, 0x07, 0x00, 0x65, 0x78, 0x70, 0x69, 0x72,
               0x65, 0x73, 0x03, 0x00, 0x31, 0x30, 0x30, 0x48, 0x45, 0x4c, 0x4c, 0x4f});
    CHECK(server.send(update) == kStatusOk);
    CHECK(hex(server.send(wire::packet(111, 17, wire::vars({{"cmd", "get"}, {"key", "m1"}})))) ==
          "6f 2a 00 11 06 00 73 74 61 74 75 73 02 00 6f 6b 04 00 73 69 7a 65 01 00 35 "
          "07 00 65 78 70 69 72 65 73 0a 00 31 37 39 35 36 34 32 34 34 39 48 45 4c 4c 4f");

    const std::string del = bytes({0x6f, 0x13, 0x00, 0x11, 0x03, 0x00, 0x63, 0x6d, 0x64, 0x03, 0x00, 0x64,
                                   0x65, 0x6c, 0x03, 0x00, 0x6b, 0x65, 0x79, 0x02, 0x00, 0x6d, 0x31});
    CHECK(server.send(del) == kStatusOk);
    CHECK(server.send(del).empty());
    CHECK(server.note.empty());
  }
  SECTION("named cache, absent key; unknown cache") {
    CHECK(server
              .send(bytes({0x6f, 0x21, 0x00, 0x11, 0x03, 0x00, 0x63, 0x6d, 0x64, 0x03, 0x00, 0x67, 0x65,
                           0x74, 0x03, 0x00, 0x6b, 0x65, 0x79, 0x02, 0x00, 0x6b, 0x31, 0x05, 0x00, 0x63,
                           0x61, 0x63, 0x68, 0x65, 0x05, 0x00, 0x73, 0x6d, 0x61, 0x6c, 0x6c}))
              .empty());
    CHECK(server.send(wire::packet(111, 17, wire::vars({{"cmd", "get"}, {"key", "k1"}, {"cache", "nosuch"}})))
              .empty());
    CHECK(server.note == "cache magic \"get\": unknown cache \"nosuch\"");
  }
  SECTION("clear acts on the target cache only") {
    REQUIRE(server.small->set("ab", "XYZ") == cache::Status::ok);
    CHECK(server.send(bytes({0x6f, 0x1a, 0x00, 0x11, 0x03, 0x00, 0x63, 0x6d, 0x64, 0x05,
                             0x00, 0x63, 0x6c, 0x65, 0x61, 0x72, 0x05, 0x00, 0x63, 0x61,
                             0x63, 0x68, 0x65, 0x05, 0x00, 0x73, 0x6d, 0x61, 0x6c, 0x6c})) == kStatusOk);
    CHECK(server.small->count() == 0);
    CHECK(server.value_of(*server.main, "k1") == "value1");
  }
  SECTION("unknown or missing cmd: no reply, a note") {
    CHECK(server.send(wire::packet(111, 17, wire::vars({{"cmd", "bogus"}, {"key", "k1"}}))).empty());
    CHECK(server.note == "cache magic: unknown cmd \"bogus\"");
    CHECK(server.send(wire::packet(111, 17, wire::vars({{"key", "k1"}}))).empty());
    CHECK(server.note == "cache magic: no cmd");
  }
  SECTION("set size must be 1..blocksize of the target cache") {
    const std::string too_big =
        wire::packet(111, 17, wire::vars({{"cmd", "set"}, {"key", "x"}, {"cache", "small"}, {"size", "17"}}),
                     std::string(17, 'v'));
    CHECK(server.send(too_big).empty());
    CHECK(server.note ==
          "cache magic set \"x\": size 17 outside 1..16 (largest value of \"small\": its blocksize)");
    CHECK(server.send(wire::packet(111, 17, wire::vars({{"cmd", "set"}, {"key", "x"}, {"size", "0"}})))
              .empty());
    CHECK(server.send(wire::packet(111, 17, wire::vars({{"cmd", "set"}, {"key", "x"}, {"size", "abc"}})))
              .empty());
    CHECK(server.note == "cache magic set: size \"abc\" is not a decimal number");
    CHECK(server.value_of(*server.small, "x") == "<miss>");
  }
  SECTION("set with the body left unframed (size over max_cache_body): no reply") {
    CHECK(server.send(wire::packet(111, 17, wire::vars({{"cmd", "set"}, {"key", "x"}, {"size", "2000000"}})))
              .empty());
    CHECK(server.note.find("over the frame limit") == std::string::npos);  // 2000000 > blocksize comes first
    CHECK(server.value_of(*server.main, "x") == "<miss>");
  }
  SECTION("empty payload: no reply") { CHECK(server.send(bytes({0x6f, 0, 0, 0x11})).empty()); }
}

TEST_CASE("mod2 17 persistent mode (keepalive=1): every reply framed, connection kept",
          "[cache-commands][magic]") {
  Server server;
  const auto status_reply = [](std::string_view status) {
    return wire::packet(111, 17, wire::vars({{"status", status}}));
  };
  CHECK(server.send(
            wire::packet(111, 17, wire::vars({{"cmd", "get"}, {"key", "nokey"}, {"keepalive", "1"}}))) ==
        status_reply("notfound"));
  CHECK_FALSE(server.reply.close_after);
  CHECK(hex(server.send(
            wire::packet(111, 17, wire::vars({{"keepalive", "1"}, {"cmd", "get"}, {"key", "k1"}})))) ==
        "6f 15 00 11 06 00 73 74 61 74 75 73 02 00 6f 6b 04 00 73 69 7a 65 01 00 36 76 61 6c 75 65 31");
  CHECK_FALSE(server.reply.close_after);
  CHECK(server.send(
            wire::packet(111, 17, wire::vars({{"cmd", "del"}, {"key", "nokey"}, {"keepalive", "1"}}))) ==
        status_reply("notfound"));
  CHECK(server.send(wire::packet(111, 17, wire::vars({{"cmd", "bogus"}, {"keepalive", "1"}}))) ==
        status_reply("error"));
  CHECK_FALSE(server.reply.close_after);
  // A set refused after its body was framed: the stream is in step, the connection stays.
  CHECK(server.send(wire::packet(
            111, 17, wire::vars({{"cmd", "set"}, {"key", "k1"}, {"size", "2"}, {"keepalive", "1"}}), "zz")) ==
        status_reply("error"));
  CHECK_FALSE(server.reply.close_after);
  // A set whose body was not framed: the rest of the stream is unknown, so the connection closes.
  CHECK(server.send(wire::packet(
            111, 17, wire::vars({{"cmd", "set"}, {"key", "k9"}, {"size", "2000000"}, {"keepalive", "1"}}))) ==
        status_reply("error"));
  CHECK(server.reply.close_after);
  // keepalive other than "1": the uWSGI behaviour.
  CHECK(server.send(wire::packet(111, 17, wire::vars({{"cmd", "get"}, {"key", "nokey"}, {"keepalive", "0"}})))
            .empty());
  CHECK(server.reply.close_after);
}

TEST_CASE("cache commands without an answer", "[cache-commands]") {
  Server server;
  SECTION("unknown modifier2: no reply (examples §1.8)") {
    for (const int command : {7, 8, 9, 10, 11, 12, 16, 18, 255}) {
      INFO("modifier2 " << command);
      CHECK(server.send(bytes({0x6f, 0x02, 0x00, command, 0x6b, 0x31})).empty());
      CHECK(server.note == fmt::format("cache command {}: unknown modifier2", command));
    }
  }
  SECTION("empty payload: no reply for 0-5 and 17; 6 dumps the default cache") {
    for (const int command : {0, 1, 2, 3, 4, 5, 17}) {
      INFO("modifier2 " << command);
      CHECK(server.send(bytes({0x6f, 0, 0, command})).empty());
      CHECK(server.note == fmt::format("cache command {}: empty payload", command));
    }
    const std::string dump = server.send(bytes({0x6f, 0, 0, 6}));
    CHECK(hex(dump.substr(0, 4)) == fmt::format("6f {:02x} 00 07", server.reply.head.size() - 4));
    CHECK(server.value_of(*server.main, "k1") == "value1");
  }
  SECTION("no cache configured: no reply for any command") {
    cache::CacheSet none;
    Dispatcher dispatcher(none, nullptr);
    for (const int command : {0, 1, 2, 3, 4, 5, 6, 17}) {
      INFO("modifier2 " << command);
      const std::string packet = command == 17
                                     ? wire::packet(111, 17, wire::vars({{"cmd", "get"}, {"key", "k"}}))
                                 : command == 1 || command == 3 || command == 4
                                     ? wire::packet(111, command, wire::vars({{"key", "k"}}))
                                     : wire::packet(111, command, "k");
      Request request{decode_header(packet.data()), std::string_view(packet).substr(4), {}};
      Reply reply;
      std::string note;
      dispatcher.handle(request, reply, &note);
      CHECK(reply.head.empty());
      CHECK(reply.body.empty());
      CHECK(note.find("no cache configured") != std::string::npos);
    }
  }
}

TEST_CASE("modifier1 0 and others", "[dispatcher]") {
  Server server;
  SECTION("no application: no reply, a note") {
    CHECK(server.send(wire::packet(0, 0, wire::vars({{"PATH_INFO", "/"}}))).empty());
    CHECK(server.note == "no application for modifier1 0");
  }
  SECTION("an unknown modifier1: no reply, uWSGI's note") {
    CHECK(server.send(wire::packet(5, 0, "xx")).empty());
    CHECK(server.note == "unavailable modifier requested: 5");
  }
  SECTION("the demo application") {
    const auto app = make_demo_application(server.caches);
    Dispatcher dispatcher(server.caches, app.get());
    const auto get = [&](std::string_view method, std::string_view path, std::string_view protocol = {}) {
      std::string vars = wire::vars({{"REQUEST_METHOD", method}, {"PATH_INFO", path}});
      if (!protocol.empty()) append_var(vars, "SERVER_PROTOCOL", protocol);
      const std::string packet = wire::packet(0, 0, vars);
      Request request{decode_header(packet.data()), std::string_view(packet).substr(4), {}};
      dispatcher.handle(request, server.reply, &server.note);
      return server.reply.head + server.reply.body;
    };
    CHECK(get("GET", "/cache/k1", "HTTP/1.1") ==
          "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 6\r\n\r\nvalue1");
    CHECK(get("GET", "/cache/nokey") ==
          "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: "
          "10\r\n\r\nNot Found\n");
    CHECK(get("POST", "/cache/k1").starts_with("HTTP/1.0 404 Not Found\r\n"));
    CHECK(get("GET", "/elsewhere").starts_with("HTTP/1.0 404 Not Found\r\n"));
    const std::string home = get("GET", "/");
    CHECK(home.starts_with("HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "));
    const std::size_t blank = home.find("\r\n\r\n");
    REQUIRE(blank != std::string::npos);
    CHECK(home.find(fmt::format("Content-Length: {}\r\n", home.size() - blank - 4)) != std::string::npos);
    CHECK(home.find("cache \"default\" (default): 1 of") != std::string::npos);
    CHECK(home.find("/cache/<key>") != std::string::npos);
    CHECK(server.note.empty());
  }
  SECTION("an empty modifier1 0 request: no reply, a note") {
    const auto app = make_demo_application(server.caches);
    Dispatcher dispatcher(server.caches, app.get());
    Request request{PacketHeader{0, 0, 0}, {}, {}};
    std::string note;
    dispatcher.handle(request, server.reply, &note);
    CHECK(server.reply.body.empty());
    CHECK(note == "empty application request (modifier1 0, datasize 0), skipped");
  }
}

TEST_CASE("magic extensions: keys, stats, inc/dec/mul/div", "[cache-commands]") {
  Server server;
  REQUIRE(server.main->set("k2", "v2") == cache::Status::ok);

  SECTION("keys lists every live key, length-prefixed, with count and size vars") {
    const std::string reply = server.send(wire::packet(111, 17, wire::vars({{"cmd", "keys"}})));
    REQUIRE(reply.size() >= 4);
    const std::size_t vars_len =
        static_cast<unsigned char>(reply[1]) | (static_cast<unsigned char>(reply[2]) << 8);
    std::map<std::string, std::string> got;
    parse_vars(std::string_view(reply).substr(4, vars_len),
               [&](std::string_view k, std::string_view v) { got[std::string(k)] = std::string(v); });
    CHECK(got["status"] == "ok");
    CHECK(got["count"] == "2");
    std::vector<std::string> keys;
    std::string_view list = std::string_view(reply).substr(4 + vars_len);
    CHECK(got["size"] == std::to_string(list.size()));
    while (list.size() >= 2) {
      const std::size_t n = static_cast<unsigned char>(list[0]) | (static_cast<unsigned char>(list[1]) << 8);
      keys.emplace_back(list.substr(2, n));
      list.remove_prefix(2 + n);
    }
    std::sort(keys.begin(), keys.end());
    CHECK(keys == std::vector<std::string>{"k1", "k2"});
  }
  SECTION("stats reports the target cache's counters") {
    const std::string reply =
        server.send(wire::packet(111, 17, wire::vars({{"cmd", "stats"}, {"cache", "small"}})));
    std::map<std::string, std::string> got;
    parse_vars(std::string_view(reply).substr(4),
               [&](std::string_view k, std::string_view v) { got[std::string(k)] = std::string(v); });
    CHECK(got["status"] == "ok");
    CHECK(got["name"] == "small");
    CHECK(got["capacity"] == "4");
    CHECK(got["blocksize"] == "16");
    CHECK(got["items"] == "0");
  }
  SECTION("inc really adds on the server, atomically; the operand is an 8-byte LE body") {
    const std::string five = bytes({5, 0, 0, 0, 0, 0, 0, 0});
    const std::string inc =
        wire::packet(111, 17, wire::vars({{"cmd", "inc"}, {"key", "n"}, {"size", "8"}}), five);
    server.send(inc);
    const std::string reply = server.send(inc);
    CHECK(reply.find(std::string("\x05\x00value\x02\x00"
                                 "10",
                                 11)) != std::string::npos);
    CHECK(server.value_of(*server.main, "n") == bytes({10, 0, 0, 0, 0, 0, 0, 0}));
    const std::string mul = wire::packet(111, 17, wire::vars({{"cmd", "mul"}, {"key", "n"}, {"size", "8"}}),
                                         bytes({3, 0, 0, 0, 0, 0, 0, 0}));
    server.send(mul);
    CHECK(server.value_of(*server.main, "n") == bytes({30, 0, 0, 0, 0, 0, 0, 0}));
  }
  SECTION("a math operand that is not 8 bytes is refused with a note, nothing stored") {
    CHECK(server.send(wire::packet(111, 17, wire::vars({{"cmd", "dec"}, {"key", "n"}, {"size", "3"}}), "abc"))
              .empty());
    CHECK(server.note.find("8-byte") != std::string::npos);
    CHECK(server.value_of(*server.main, "n") == "<miss>");
  }
}

// ---- UDP cache sync packets (spec §2.7) ----

TEST_CASE("UDP sync packets: uWSGI's bytes, and what a receiver applies", "[udp]") {
  // Set: [111, L, 10] + array [key, value, expires as decimal]; delete: [111, L, 11] + array [key].
  CHECK(hex(server::udp_set_packet("k", "v", 0)) == "6f 09 00 0a 01 00 6b 01 00 76 01 00 30");
  CHECK(hex(server::udp_set_packet("ab", "xyz", 1795642449)) ==
        "6f 15 00 0a 02 00 61 62 03 00 78 79 7a 0a 00 31 37 39 35 36 34 32 34 34 39");
  CHECK(hex(server::udp_delete_packet("ab")) == "6f 04 00 0b 02 00 61 62");
  CHECK_THROWS_AS(server::udp_set_packet("k", std::string(70000, 'v'), 0), std::length_error);

  cache::Geometry g;
  g.name = "udp";
  g.items = 8;
  g.blocksize = 64;
  g.keysize = 16;
  auto c = cache::Cache::create(g);
  std::string error;
  const std::int64_t in_an_hour = static_cast<std::int64_t>(std::time(nullptr)) + 3600;
  REQUIRE(server::apply_udp_packet(*c, server::udp_set_packet("a", "1", 0), &error));
  REQUIRE(server::apply_udp_packet(
      *c, server::udp_set_packet("b", "2", static_cast<std::uint64_t>(in_an_hour)), &error));
  REQUIRE(server::apply_udp_packet(*c, server::udp_set_packet("a", "3", 0), &error));  // set = update
  std::string v;
  std::int64_t expires = 0;
  CHECK((c->get("a", v) == cache::Status::ok && v == "3"));
  CHECK((c->get("b", v, &expires) == cache::Status::ok && v == "2"));
  CHECK(std::abs(expires - in_an_hour) <= 1);
  CHECK(server::apply_udp_packet(*c, server::udp_set_packet("gone", "x", 1000), &error));  // expired: dropped
  CHECK(c->exists("gone") == cache::Status::miss);
  REQUIRE(server::apply_udp_packet(*c, server::udp_delete_packet("a"), &error));
  CHECK(c->exists("a") == cache::Status::miss);
  CHECK(server::apply_udp_packet(*c, server::udp_delete_packet("a"), &error));  // already gone: fine

  struct Bad {
    std::string datagram;
    std::string why;
  };
  const std::vector<Bad> bad = {
      {"", "shorter than a header"},
      {std::string("\x6e\x00\x00\x0a", 4), "modifier1 110"},
      {std::string("\x6f\x05\x00\x0a\x01\x00k", 7), "datasize 5 but 3 bytes"},
      {std::string("\x6f\x03\x00\x0c\x01\x00k", 7), "modifier2 12"},
      {std::string("\x6f\x03\x00\x0a\x01\x00k", 7), "set with 1 items"},
      {std::string("\x6f\x06\x00\x0a\x01\x00k\x05\x00v", 10), "runs past"},
      {std::string("\x6f\x0a\x00\x0a\x01\x00k\x01\x00v\x02\x00-1", 14), "is not a number"},
      {std::string("\x6f\x06\x00\x0b\x01\x00k\x01\x00v", 10), "delete with 2 items"},
      {std::string("\x6f\x08\x00\x0a\x01\x00k\x00\x00\x01\x00"
                   "0",
                   12),
       "empty"},
  };
  for (const Bad& b : bad) {
    INFO(hex(b.datagram));
    error.clear();
    CHECK_FALSE(server::apply_udp_packet(*c, b.datagram, &error));
    CHECK(error.find(b.why) != std::string::npos);
  }
  CHECK(c->count() == 1);  // only "b": no bad packet changed anything
}
