// uWSGI's --uid/--gid/--chown-socket/--umask: who the server runs as and who owns its files.
// Names are resolved before anything is bound (a typo fails at once); the drop itself happens after
// the sockets, caches and pidfile exist and before the application is loaded.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

namespace master {

struct Identity {
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::string user_name;  // for initgroups; "" when --uid named no passwd entry
};

// Resolves --uid/--gid (names or numbers). Throws std::runtime_error naming an unknown user or group.
Identity resolve_identity(const std::string& uid, const std::string& gid);

// Resolves a --chown-socket value "user[:group]": a group left out stays as created (-1 for chown).
struct Owner {
  uid_t uid;
  gid_t gid;
};
Owner resolve_owner(const std::string& spec);

// Writes pid to path ("" = nothing), atomically: a temporary file beside it renamed into place (uWSGI's
// safe-pidfile), so a reader never sees half a pid. Throws std::runtime_error naming --option.
void write_pidfile(const std::string& path, const char* option, pid_t pid);

// Sets the process umask from an octal text ("" = leave it).
void apply_umask(const std::string& octal);

// As root: the supplementary groups (initgroups for the --uid user, none otherwise), setgid, then
// setuid; every step is checked, and root must be gone afterwards. Not root: only a no-op request is
// allowed (already that user/group), as in uWSGI. Throws std::runtime_error when the drop fails.
void drop_privileges(const Identity& identity);

}  // namespace master
