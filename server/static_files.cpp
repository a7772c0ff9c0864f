#include "server/static_files.hpp"

#include <errno.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace server {

void FileBody::close() {
  if (fd >= 0) ::close(fd);
  fd = -1;
  offset = 0;
  length = 0;
}

namespace {

// Used when the system has no /etc/mime.types (a slim container): the types static sites need.
constexpr std::pair<std::string_view, std::string_view> kFallbackMimeTypes[] = {
    {"html", "text/html"},      {"htm", "text/html"},        {"css", "text/css"},
    {"js", "text/javascript"},  {"mjs", "text/javascript"},  {"json", "application/json"},
    {"txt", "text/plain"},      {"xml", "application/xml"},  {"svg", "image/svg+xml"},
    {"png", "image/png"},       {"jpg", "image/jpeg"},       {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},       {"webp", "image/webp"},      {"ico", "image/vnd.microsoft.icon"},
    {"woff", "font/woff"},      {"woff2", "font/woff2"},     {"ttf", "font/ttf"},
    {"pdf", "application/pdf"}, {"map", "application/json"}, {"wasm", "application/wasm"},
};

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

std::string real_path(const std::string& path) {
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) == nullptr) return {};
  return resolved;
}

// `path` is `root` or below it (a whole path component: /srv/static-secret is not under /srv/static).
bool under(const std::string& path, const std::string& root) {
  if (root == "/") return true;
  if (path.size() < root.size() || path.compare(0, root.size(), root) != 0) return false;
  return path.size() == root.size() || path[root.size()] == '/';
}

// A PATH_INFO that climbs (a ".." segment) or hides a NUL is refused before the file system sees it;
// the realpath check below catches what remains (symbolic links).
bool plain_path(std::string_view path) {
  if (path.find('\0') != std::string_view::npos) return false;
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t end = std::min(path.find('/', start), path.size());
    if (path.substr(start, end - start) == "..") return false;
    start = end + 1;
  }
  return true;
}

std::string_view split_mount(std::string_view value, std::string_view& root) {
  const auto equals = value.find('=');
  if (equals == std::string_view::npos || equals == 0 || equals + 1 == value.size()) return {};
  root = value.substr(equals + 1);
  return value.substr(0, equals);
}

}  // namespace

// The parts of the request the file server reads (the uwsgi vars, parsed once).
struct RequestFacts {
  std::string_view path_info;
  std::string_view method;
  std::string_view protocol;
  std::string_view if_modified_since;
  std::string_view accept_encoding;
};

StaticFiles::StaticFiles(const StaticSettings& settings)
    : index_(settings.index), gzip_all_(settings.gzip_all) {
  const auto resolve = [](std::string_view option, std::string_view value, const std::string& path) {
    std::string real = real_path(path);
    if (real.empty()) {
      throw std::runtime_error(
          fmt::format("--{} {}: cannot use {}: {}", option, value, path, std::strerror(errno)));
    }
    return real;
  };
  const auto add_map = [&](std::string_view option, const std::string& value, bool keep_prefix) {
    std::string_view root;
    std::string_view prefix = split_mount(value, root);
    if (prefix.empty() || prefix.front() != '/') {
      throw std::runtime_error(fmt::format("--{} {}: expected /MOUNTPOINT=PATH", option, value));
    }
    Mount mount;
    mount.prefix = std::string(prefix);
    mount.root = resolve(option, value, std::string(root));
    mount.keep_prefix = keep_prefix;
    struct stat st {};
    mount.is_file = ::stat(mount.root.c_str(), &st) == 0 && S_ISREG(st.st_mode);
    mounts_.push_back(std::move(mount));
  };
  for (const auto& value : settings.map) add_map("static-map", value, false);
  for (const auto& value : settings.map2) add_map("static-map2", value, true);
  for (const auto& value : settings.check) {
    Mount mount;
    mount.root = resolve("check-static", value, value);
    mounts_.push_back(std::move(mount));
  }
  for (const auto& value : settings.expires) {
    const auto space = value.find_last_of(' ');
    Expiry expiry;
    char* end = nullptr;
    const std::string seconds = space == std::string::npos ? std::string() : value.substr(space + 1);
    expiry.seconds = std::strtoll(seconds.c_str(), &end, 10);
    if (seconds.empty() || *end != '\0' || expiry.seconds < 0) {
      throw std::runtime_error(fmt::format("--static-expires {}: expected \"REGEXP SECONDS\"", value));
    }
    try {
      expiry.pattern = std::regex(value.substr(0, space), std::regex::ECMAScript | std::regex::optimize);
    } catch (const std::regex_error& error) {
      throw std::runtime_error(
          fmt::format("--static-expires {}: bad regular expression: {}", value, error.what()));
    }
    expires_.push_back(std::move(expiry));
  }
  for (const auto& dir : settings.gzip_dir) gzip_dirs_.push_back(dir);
  for (const auto& header : settings.add_header) extra_headers_ += header + "\r\n";
  for (const auto& dir : settings.safe) {
    std::string real = real_path(dir);
    safe_.push_back(real.empty() ? dir : real);
  }
  // uWSGI reads the system's table too (its --mimefile default).
  std::ifstream file(settings.mime_file);
  std::string line;
  while (std::getline(file, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string type, extension;
    words >> type;
    while (words >> extension) mime_types_.emplace(lower(extension), type);
  }
  if (mime_types_.empty()) {
    for (const auto& [extension, type] : kFallbackMimeTypes) mime_types_.emplace(extension, type);
  }
}

std::string_view StaticFiles::mime_type(std::string_view file_name) const {
  const auto slash = file_name.find_last_of('/');
  const auto dot = file_name.find_last_of('.');
  if (dot == std::string_view::npos || (slash != std::string_view::npos && dot < slash)) return {};
  const auto found = mime_types_.find(lower(file_name.substr(dot + 1)));
  return found == mime_types_.end() ? std::string_view() : std::string_view(found->second);
}

bool StaticFiles::inside_allowed(const std::string& real, const std::string& root) const {
  if (under(real, root)) return true;
  return std::any_of(safe_.begin(), safe_.end(), [&](const std::string& safe) { return under(real, safe); });
}

bool StaticFiles::serve(const Request& request, const StaticConnection& connection, Reply& reply,
                        std::string& note) const {
  RequestFacts facts;
  parse_vars(request.payload, [&](std::string_view key, std::string_view value) {
    if (key == "PATH_INFO")
      facts.path_info = value;
    else if (key == "REQUEST_METHOD")
      facts.method = value;
    else if (key == "SERVER_PROTOCOL")
      facts.protocol = value;
    else if (key == "HTTP_IF_MODIFIED_SINCE")
      facts.if_modified_since = value;
    else if (key == "HTTP_ACCEPT_ENCODING")
      facts.accept_encoding = value;
  });
  // uWSGI serves GET and HEAD only; anything else (a POST to /static/form) is the application's.
  if (facts.method != "GET" && facts.method != "HEAD") return false;
  if (facts.path_info.empty() || !plain_path(facts.path_info)) return false;
  for (const Mount& mount : mounts_) {
    if (!facts.path_info.starts_with(mount.prefix)) continue;
    if (try_mount(mount, facts.path_info, facts, connection, reply, note)) return true;
  }
  return false;
}

bool StaticFiles::try_mount(const Mount& mount, std::string_view path_info, const RequestFacts& facts,
                            const StaticConnection& connection, Reply& reply, std::string& note) const {
  std::string candidate;
  if (mount.is_file) {
    if (path_info != mount.prefix) return false;
    candidate = mount.root;
  } else {
    const std::string_view rest = mount.keep_prefix ? path_info : path_info.substr(mount.prefix.size());
    // /static must not match /staticfoo: the mount point ends at a path component.
    if (!mount.keep_prefix && !mount.prefix.empty() && !rest.empty() && rest.front() != '/' &&
        mount.prefix.back() != '/')
      return false;
    candidate = mount.root + "/" + std::string(rest);
  }
  std::string real = real_path(candidate);
  if (real.empty()) return false;
  if (!inside_allowed(real, mount.root)) {
    note =
        fmt::format("[uwsgi-fileserve] security error: {} is not under {} or a safe path", real, mount.root);
    return false;
  }
  struct stat st {};
  if (::stat(real.c_str(), &st) != 0) return false;
  if (S_ISDIR(st.st_mode)) {
    bool found = false;
    for (const std::string& name : index_) {
      std::string index_path = real_path(real + "/" + name);
      struct stat index_st {};
      if (!index_path.empty() && inside_allowed(index_path, mount.root) &&
          ::stat(index_path.c_str(), &index_st) == 0 && S_ISREG(index_st.st_mode)) {
        real = std::move(index_path);
        st = index_st;
        found = true;
        break;
      }
    }
    if (!found) return false;
  } else if (!S_ISREG(st.st_mode)) {
    return false;
  }

  const std::string_view type = mime_type(real);
  // A precompressed variant (FILE.gz) when the client takes gzip: uWSGI's --static-gzip-all and
  // --static-gzip-dir. The variant must stay inside the folder too.
  std::string send_path = real;
  bool gzip = false;
  const bool gzip_wanted =
      gzip_all_ || std::any_of(gzip_dirs_.begin(), gzip_dirs_.end(),
                               [&](const std::string& dir) { return real.starts_with(dir); });
  if (gzip_wanted && facts.accept_encoding.find("gzip") != std::string_view::npos) {
    std::string variant = real_path(real + ".gz");
    struct stat gz_st {};
    if (!variant.empty() && inside_allowed(variant, mount.root) && ::stat(variant.c_str(), &gz_st) == 0 &&
        S_ISREG(gz_st.st_mode)) {
      send_path = std::move(variant);
      st = gz_st;
      gzip = true;
    }
  }

  reply.clear();
  const std::string_view protocol = facts.protocol == "HTTP/1.0" ? "HTTP/1.0" : "HTTP/1.1";
  std::string& head = reply.head;
  const auto connection_header = [&] {
    if (!connection.http) return;
    if (!connection.keep_alive) {
      head += "Connection: close\r\n";
    } else if (protocol == "HTTP/1.0") {
      head += "Connection: keep-alive\r\n";
    }
    reply.close_after = !connection.keep_alive;
  };
  reply.http_ready = true;
  const std::string last_modified = http_date(st.st_mtime);
  if (!facts.if_modified_since.empty()) {
    const std::int64_t since = parse_http_date(facts.if_modified_since);
    if (since >= 0 && st.st_mtime <= since) {
      head += fmt::format("{} 304 Not Modified\r\nLast-Modified: {}\r\n", protocol, last_modified);
      head += extra_headers_;
      connection_header();
      head += "\r\n";
      return true;
    }
  }
  const int fd = ::open(send_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    reply.clear();
    return false;
  }
  head += fmt::format("{} 200 OK\r\n", protocol);
  if (!type.empty()) head += fmt::format("Content-Type: {}\r\n", type);
  if (gzip) head += "Content-Encoding: gzip\r\n";
  if (gzip_wanted) head += "Vary: Accept-Encoding\r\n";
  head += fmt::format("Content-Length: {}\r\nLast-Modified: {}\r\n", st.st_size, last_modified);
  for (const Expiry& expiry : expires_) {
    if (std::regex_search(real, expiry.pattern)) {
      head += fmt::format("Expires: {}\r\n", http_date(::time(nullptr) + expiry.seconds));
      break;
    }
  }
  head += extra_headers_;
  connection_header();
  head += "\r\n";
  if (facts.method == "HEAD") {
    ::close(fd);
    return true;
  }
  reply.file.fd = fd;
  reply.file.offset = 0;
  reply.file.length = static_cast<std::uint64_t>(st.st_size);
  return true;
}

SendStatus send_file_body(int socket_fd, FileBody& file) {
  while (file.length > 0) {
    off_t offset = static_cast<off_t>(file.offset);
    const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(file.length, 1u << 30));
    const ssize_t n = ::sendfile(socket_fd, file.fd, &offset, chunk);
    if (n > 0) {
      file.offset += static_cast<std::uint64_t>(n);
      file.length -= static_cast<std::uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return SendStatus::again;
    if (n == 0) errno = EIO;  // the file shrank under us: the announced length cannot be met
    return SendStatus::failed;
  }
  file.close();
  return SendStatus::done;
}

std::string http_date(std::int64_t unix_seconds) {
  static constexpr std::string_view kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  gmtime_r(&t, &tm);
  return fmt::format("{}, {:02d} {} {:04d} {:02d}:{:02d}:{:02d} GMT", kDays[tm.tm_wday], tm.tm_mday,
                     kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::int64_t parse_http_date(std::string_view text) {
  // RFC 1123 only (what browsers and proxies send), as uWSGI: "Sun, 06 Nov 1994 08:49:37 GMT".
  if (text.size() != 29 || text[3] != ',' || text.substr(26) != "GMT") return -1;
  static constexpr std::string_view kMonths = "JanFebMarAprMayJunJulAugSepOctNovDec";
  const auto number = [&](std::size_t at, std::size_t digits) -> int {
    int value = 0;
    for (std::size_t i = at; i < at + digits; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(text[i]))) return -1;
      value = value * 10 + (text[i] - '0');
    }
    return value;
  };
  const auto month = kMonths.find(text.substr(8, 3));
  struct tm tm {};
  tm.tm_mday = number(5, 2);
  tm.tm_year = number(12, 4) - 1900;
  tm.tm_hour = number(17, 2);
  tm.tm_min = number(20, 2);
  tm.tm_sec = number(23, 2);
  if (month == std::string_view::npos || month % 3 != 0 || tm.tm_mday < 1 || tm.tm_year < 0 ||
      tm.tm_hour < 0 || tm.tm_min < 0 || tm.tm_sec < 0)
    return -1;
  tm.tm_mon = static_cast<int>(month / 3);
  return static_cast<std::int64_t>(timegm(&tm));
}

}  // namespace server
