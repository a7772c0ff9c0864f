// Static files served by the worker itself (uWSGI's --static-map, --static-map2, --check-static and
// friends): the request's PATH_INFO is mapped to a file under a configured folder, and the reply is a
// complete HTTP head plus the file, which the worker sends with sendfile(2) from its event loop. The
// application never sees these requests. A request that maps to nothing (no file, another method than
// GET/HEAD, a path leaving the folder) goes on to the application, as in uWSGI.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "server/protocol.hpp"

namespace server {

struct StaticSettings {
  std::vector<std::string> map;         // --static-map MOUNT=DIR: MOUNT/x -> DIR/x
  std::vector<std::string> map2;        // --static-map2 MOUNT=DIR: MOUNT/x -> DIR/MOUNT/x
  std::vector<std::string> check;       // --check-static DIR: /x -> DIR/x
  std::vector<std::string> index;       // --static-index NAME: a directory answers with DIR/NAME
  std::vector<std::string> expires;     // --static-expires "REGEXP SECONDS" on the real file name
  std::vector<std::string> gzip_dir;    // --static-gzip-dir PREFIX: gzip variants under these paths
  std::vector<std::string> safe;        // --static-safe DIR: a path outside the folder allowed anyway
  bool gzip_all = false;                // --static-gzip-all: a FILE.gz variant for every file
  std::vector<std::string> add_header;  // --add-header "Name: value": on every response
  std::string mime_file = "/etc/mime.types";
};

// What the worker knows of the connection that the uwsgi vars do not say.
struct StaticConnection {
  bool http = false;        // an --http-socket connection: the head says whether it is kept
  bool keep_alive = false;  // (http) the request allows keeping it
};

enum class SendStatus { done, again, failed };

class StaticFiles {
 public:
  // Resolves every folder now (realpath) and compiles the expiry patterns. Throws std::runtime_error
  // naming the option and the value when one is unusable.
  explicit StaticFiles(const StaticSettings& settings);

  bool enabled() const { return !mounts_.empty(); }

  // Answers a modifier1 0 request from the file system when a mapping applies: true with `reply`
  // holding the whole head (200, 304) and reply.file the body to send; false to let the application
  // answer. `note` gets a line for the log when a path was refused (outside its folder).
  bool serve(const Request& request, const StaticConnection& connection, Reply& reply,
             std::string& note) const;

 private:
  struct Mount {
    std::string prefix;  // what PATH_INFO starts with ("" for --check-static)
    std::string root;    // realpath of the folder or file
    bool keep_prefix = false;
    bool is_file = false;  // the mount names one file (exact PATH_INFO match)
  };
  struct Expiry {
    std::regex pattern;
    std::int64_t seconds = 0;
  };
  bool try_mount(const Mount& mount, std::string_view path_info, const struct RequestFacts& facts,
                 const StaticConnection& connection, Reply& reply, std::string& note) const;
  bool inside_allowed(const std::string& real, const std::string& root) const;
  std::string_view mime_type(std::string_view file_name) const;

  std::vector<Mount> mounts_;
  std::vector<std::string> index_;
  std::vector<Expiry> expires_;
  std::vector<std::string> gzip_dirs_;
  std::vector<std::string> safe_;
  bool gzip_all_ = false;
  std::string extra_headers_;                                   // --add-header lines, CRLF-terminated
  std::map<std::string, std::string, std::less<>> mime_types_;  // extension (lower case) -> type
};

// Sends what is left of reply.file on a non-blocking socket: done (and the file closed), again (the
// socket is full: wait for writability) or failed (errno says why).
SendStatus send_file_body(int socket_fd, FileBody& file);

// RFC 1123 date ("Sun, 06 Nov 1994 08:49:37 GMT") for HTTP headers, and its parser (-1 if malformed).
std::string http_date(std::int64_t unix_seconds);
std::int64_t parse_http_date(std::string_view text);

}  // namespace server
