// server/static_files: the mapping of PATH_INFO to a file and the head it answers with, against a real
// folder (made per run under the system's temp dir), without sockets.
#include "server/static_files.hpp"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>

#include "wire.hpp"

namespace {

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
namespace fs = std::filesystem;

struct Tree {
  fs::path root;
  Tree() {
    std::string pattern = (fs::temp_directory_path() / "static-unit-XXXXXX").string();
    root = mkdtemp(pattern.data());
    fs::create_directories(root / "static" / "css");
    fs::create_directories(root / "outside");
    std::ofstream(root / "static" / "css" / "a.css") << "body{}";
    std::ofstream(root / "static" / "index.html") << "<h1>";
    std::ofstream(root / "outside" / "secret") << "SECRET";
    fs::create_symlink(root / "outside" / "secret", root / "static" / "link");
  }
  ~Tree() { fs::remove_all(root); }
};

struct Answer {
  bool served = false;
  std::string head;
  bool has_file = false;
  std::uint64_t length = 0;
  std::string note;
};

Answer ask(const server::StaticFiles& files, std::string_view path, std::string_view method = "GET",
           std::string_view if_modified_since = {}, server::StaticConnection connection = {}) {
  const std::string payload = wire::vars({{"REQUEST_METHOD", method},
                                          {"PATH_INFO", path},
                                          {"SERVER_PROTOCOL", "HTTP/1.1"},
                                          {"HTTP_IF_MODIFIED_SINCE", if_modified_since}});
  server::Request request;
  request.payload = payload;
  server::Reply reply;
  Answer answer;
  answer.served = files.serve(request, connection, reply, answer.note);
  answer.head = reply.head;
  answer.has_file = reply.file.open();
  answer.length = reply.file.length;
  return answer;
}

}  // namespace

TEST_CASE("static files: a mapped file, its head, 304 and HEAD", "[static]") {
  Tree tree;
  server::StaticSettings settings;
  settings.map = {"/static=" + (tree.root / "static").string()};
  settings.index = {"index.html"};
  const server::StaticFiles files(settings);
  const Answer answer = ask(files, "/static/css/a.css");
  REQUIRE(answer.served);
  CHECK_THAT(answer.head, StartsWith("HTTP/1.1 200 OK\r\n") && Contains("Content-Type: text/css\r\n") &&
                              Contains("Content-Length: 6\r\n") && Contains("Last-Modified: "));
  CHECK(answer.has_file);
  CHECK(answer.length == 6);
  struct stat st {};
  REQUIRE(::stat((tree.root / "static" / "css" / "a.css").c_str(), &st) == 0);
  const std::string date = server::http_date(st.st_mtime);
  CHECK_THAT(ask(files, "/static/css/a.css", "GET", date).head, StartsWith("HTTP/1.1 304 Not Modified\r\n"));
  CHECK_THAT(ask(files, "/static/css/a.css", "GET", server::http_date(st.st_mtime - 1)).head,
             StartsWith("HTTP/1.1 200 OK"));
  const Answer head = ask(files, "/static/css/a.css", "HEAD");
  CHECK(head.served);
  CHECK_FALSE(head.has_file);
  CHECK_THAT(ask(files, "/static/", "GET").head, Contains("Content-Type: text/html"));
  CHECK_FALSE(ask(files, "/static/css/a.css", "POST").served);
  CHECK_FALSE(ask(files, "/static/missing", "GET").served);
  CHECK_FALSE(ask(files, "/staticx/css/a.css", "GET").served);
}

TEST_CASE("static files: nothing outside the folder", "[static]") {
  Tree tree;
  server::StaticSettings settings;
  settings.map = {"/static=" + (tree.root / "static").string()};
  const server::StaticFiles files(settings);
  for (const char* path : {"/static/../outside/secret", "/static/css/../../outside/secret", "/static/..",
                           "/static/./../outside/secret"}) {
    INFO(path);
    CHECK_FALSE(ask(files, path).served);
  }
  const Answer link = ask(files, "/static/link");
  CHECK_FALSE(link.served);
  CHECK_THAT(link.note, Contains("security error") && Contains("is not under"));
  settings.safe = {(tree.root / "outside").string()};
  const server::StaticFiles with_safe(settings);
  CHECK(ask(with_safe, "/static/link").served);  // --static-safe lets it through
}

TEST_CASE("static files: the connection header on an HTTP socket", "[static]") {
  Tree tree;
  server::StaticSettings settings;
  settings.check = {(tree.root / "static").string()};
  settings.add_header = {"X-A: b"};
  const server::StaticFiles files(settings);
  const Answer kept = ask(files, "/css/a.css", "GET", {}, {.http = true, .keep_alive = true});
  CHECK_THAT(kept.head, Contains("X-A: b\r\n"));
  CHECK_THAT(kept.head, !Contains("Connection:"));
  CHECK_THAT(ask(files, "/css/a.css", "GET", {}, {.http = true, .keep_alive = false}).head,
             Contains("Connection: close\r\n"));
}

TEST_CASE("HTTP dates: RFC 1123 both ways, anything else refused", "[static]") {
  CHECK(server::http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK(server::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777);
  CHECK(server::parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == -1);
  CHECK(server::parse_http_date("Sun, 06 Xyz 1994 08:49:37 GMT") == -1);
  CHECK(server::parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC") == -1);
  CHECK(server::parse_http_date("") == -1);
  CHECK(server::parse_http_date("Sun, 0x Nov 1994 08:49:37 GMT") == -1);
}
