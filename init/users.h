// The user a container's command runs as, resolved from the image's own /etc/passwd and /etc/group
// the way runc does it (github.com/moby/sys/user GetExecUser). A static /init has no NSS modules,
// so glibc's getpwnam cannot be used: the files are parsed here.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace imagefs::init {

struct ExecUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (setgroups), possibly empty
  std::string home = "/";
  friend bool operator==(const ExecUser&, const ExecUser&) = default;
};

// Resolves `spec` ("", "name", "uid", "name:group", "uid:gid", "name:gid", "uid:group") against
// the contents of /etc/passwd and /etc/group (nullopt: the image has no such file):
//  - the user: a number is a uid, looked up in passwd for its gid and home but fine without an
//    entry; a name must have an entry. "" is uid 0 (root's entry, if any, gives home and groups).
//  - the group: when given, a number is a gid (an entry is not needed), a name must be in group;
//    it replaces the passwd entry's gid, and there are no supplementary groups. When not given,
//    the user's passwd gid, and as supplementary groups every group that lists the user's name.
//  - home: the passwd entry's, else "/".
// ENOENT with a message naming the user or group that cannot be found (and whether the file is
// missing); EINVAL for a uid or gid out of range (0 to 2^31-1).
Result<ExecUser> resolve_user(std::string_view spec, const std::optional<std::string>& passwd,
                              const std::optional<std::string>& group);

}  // namespace imagefs::init
