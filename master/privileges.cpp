#include "master/privileges.hpp"

#include <fmt/format.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "common/log.hpp"
#include "config/config.hpp"

namespace master {

namespace {

std::optional<unsigned long> as_number(const std::string& text) {
  unsigned long value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

uid_t lookup_user(const std::string& name, const char* option, std::string* user_name) {
  if (const passwd* entry = getpwnam(name.c_str())) {
    if (user_name != nullptr) *user_name = entry->pw_name;
    return entry->pw_uid;
  }
  if (auto number = as_number(name)) {
    const auto uid = static_cast<uid_t>(*number);
    if (user_name != nullptr) {
      const passwd* entry = getpwuid(uid);
      *user_name = entry != nullptr ? entry->pw_name : "";
    }
    return uid;
  }
  fail(fmt::format("--{} {}: no such user", option, name));
}

gid_t lookup_group(const std::string& name, const char* option) {
  if (const group* entry = getgrnam(name.c_str())) return entry->gr_gid;
  if (auto number = as_number(name)) return static_cast<gid_t>(*number);
  fail(fmt::format("--{} {}: no such group", option, name));
}

}  // namespace

Identity resolve_identity(const std::string& uid, const std::string& gid) {
  Identity identity;
  if (!uid.empty()) identity.uid = lookup_user(uid, "uid", &identity.user_name);
  if (!gid.empty()) identity.gid = lookup_group(gid, "gid");
  return identity;
}

Owner resolve_owner(const std::string& spec) {
  const auto colon = spec.find(':');
  Owner owner{lookup_user(spec.substr(0, colon), "chown-socket", nullptr), static_cast<gid_t>(-1)};
  if (colon != std::string::npos) owner.gid = lookup_group(spec.substr(colon + 1), "chown-socket");
  return owner;
}

void write_pidfile(const std::string& path, const char* option, pid_t pid) {
  if (path.empty()) return;
  const std::string temporary = fmt::format("{}.{}.tmp", path, pid);
  std::ofstream out(temporary, std::ios::trunc);
  out << pid << '\n';
  out.close();
  if (!out || std::rename(temporary.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(temporary.c_str());
    throw std::runtime_error(fmt::format("cannot write --{} {}: {}", option, path, std::strerror(error)));
  }
}

void apply_umask(const std::string& octal) {
  if (octal.empty()) return;
  const auto mask = config::parse_umask(octal);  // validated by the option table already
  if (mask) umask(static_cast<mode_t>(*mask));
}

void drop_privileges(const Identity& identity) {
  if (!identity.uid && !identity.gid) return;
  if (getuid() != 0) {
    // Only root can change identity; asking to become who we already are is harmless.
    if (identity.gid && getgid() != *identity.gid)
      fail(fmt::format("--gid {}: cannot setgid() as a non-root user", *identity.gid));
    if (identity.uid && getuid() != *identity.uid)
      fail(fmt::format("--uid {}: cannot setuid() as a non-root user", *identity.uid));
    return;
  }
  if (identity.gid) {
    if (setgid(*identity.gid) != 0) fail(fmt::format("setgid({}): {}", *identity.gid, std::strerror(errno)));
    common::log("setgid() to {}", *identity.gid);
    // Root's supplementary groups (root, disk, ...) must not survive the drop.
    const bool by_name = identity.uid && *identity.uid != 0 && !identity.user_name.empty();
    const int rc = by_name ? initgroups(identity.user_name.c_str(), *identity.gid) : setgroups(0, nullptr);
    if (rc != 0) fail(fmt::format("setting the supplementary groups: {}", std::strerror(errno)));
  } else if (setgroups(0, nullptr) != 0) {
    fail(fmt::format("setgroups(): {}", std::strerror(errno)));
  }
  if (identity.uid) {
    if (setuid(*identity.uid) != 0) fail(fmt::format("setuid({}): {}", *identity.uid, std::strerror(errno)));
    common::log("setuid() to {}", *identity.uid);
    // A dropped user must not be able to take root back.
    if (*identity.uid != 0 && (setuid(0) == 0 || geteuid() == 0))
      fail(fmt::format("--uid {}: root privileges could be regained after the drop; refusing to go on",
                       *identity.uid));
  }
}

}  // namespace master
