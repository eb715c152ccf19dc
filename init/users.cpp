// /etc/passwd and /etc/group lookups for the default /init, as runc performs them.
#include "init/users.h"

#include <cstdint>

namespace imagefs::init {

namespace {

constexpr uint64_t kMaxId = 0x7fffffff;

struct PasswdEntry {
  std::string name;
  uint64_t uid = 0;
  uint64_t gid = 0;
  std::string home;
};

struct GroupEntry {
  std::string name;
  uint64_t gid = 0;
  std::vector<std::string> members;
};

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> out;
  size_t at = 0;
  while (true) {
    const size_t end = text.find(sep, at);
    out.push_back(
        text.substr(at, end == std::string_view::npos ? std::string_view::npos : end - at));
    if (end == std::string_view::npos) return out;
    at = end + 1;
  }
}

// A decimal id; nullopt when `text` is not one (empty, a sign, other characters, too long).
std::optional<uint64_t> parse_id(std::string_view text) {
  if (text.empty() || text.size() > 19) return std::nullopt;
  uint64_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

// Lines of a colon-separated file, without comments and blank lines.
std::vector<std::vector<std::string_view>> records(std::string_view text) {
  std::vector<std::vector<std::string_view>> out;
  for (std::string_view line : split(text, '\n')) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    out.push_back(split(line, ':'));
  }
  return out;
}

// Entries whose uid/gid fields are not numbers are skipped, as they cannot be used.
std::vector<PasswdEntry> parse_passwd(std::string_view text) {
  std::vector<PasswdEntry> out;
  for (const auto& f : records(text)) {
    if (f.size() < 4) continue;
    auto uid = parse_id(f[2]);
    auto gid = parse_id(f[3]);
    if (!uid || !gid) continue;
    out.push_back({std::string(f[0]), *uid, *gid, f.size() > 5 ? std::string(f[5]) : ""});
  }
  return out;
}

std::vector<GroupEntry> parse_group(std::string_view text) {
  std::vector<GroupEntry> out;
  for (const auto& f : records(text)) {
    if (f.size() < 3) continue;
    auto gid = parse_id(f[2]);
    if (!gid) continue;
    GroupEntry g{std::string(f[0]), *gid, {}};
    if (f.size() > 3 && !f[3].empty()) {
      for (std::string_view m : split(f[3], ',')) {
        if (!m.empty()) g.members.emplace_back(m);
      }
    }
    out.push_back(std::move(g));
  }
  return out;
}

Error out_of_range(std::string_view what, std::string_view value) {
  return make_error(
      EINVAL, std::string(what) + " " + std::string(value) + " is out of range (0 to 2147483647)");
}

}  // namespace

Result<ExecUser> resolve_user(std::string_view spec, const std::optional<std::string>& passwd,
                              const std::optional<std::string>& group) {
  const size_t colon = spec.find(':');
  const std::string_view user_arg = spec.substr(0, colon);
  const std::string_view group_arg =
      colon == std::string_view::npos ? std::string_view() : spec.substr(colon + 1);
  const std::optional<uint64_t> uid_arg = parse_id(user_arg);
  const std::optional<uint64_t> gid_arg = parse_id(group_arg);

  ExecUser out;
  std::string matched_name;
  const std::vector<PasswdEntry> users =
      passwd ? parse_passwd(*passwd) : std::vector<PasswdEntry>();
  const PasswdEntry* match = nullptr;
  for (const PasswdEntry& u : users) {
    const bool hit = user_arg.empty() ? u.uid == 0
                     : uid_arg        ? u.uid == *uid_arg
                                      : u.name == user_arg;
    if (hit) {
      match = &u;  // the first entry wins, as in runc
      break;
    }
  }
  if (match != nullptr) {
    if (match->uid > kMaxId) return out_of_range("uid", std::to_string(match->uid));
    if (match->gid > kMaxId) return out_of_range("gid", std::to_string(match->gid));
    matched_name = match->name;
    out.uid = static_cast<uid_t>(match->uid);
    out.gid = static_cast<gid_t>(match->gid);
    if (!match->home.empty()) out.home = match->home;
  } else if (!user_arg.empty()) {
    if (!uid_arg) {
      return make_error(ENOENT, "unable to find user " + std::string(user_arg) + ": " +
                                    (passwd ? "no entry in the image's /etc/passwd"
                                            : "the image has no /etc/passwd"));
    }
    if (*uid_arg > kMaxId) return out_of_range("uid", user_arg);
    out.uid = static_cast<uid_t>(*uid_arg);
  }

  if (group_arg.empty() && matched_name.empty()) return out;
  const std::vector<GroupEntry> groups = group ? parse_group(*group) : std::vector<GroupEntry>();
  if (!group_arg.empty()) {
    for (const GroupEntry& g : groups) {
      if (gid_arg ? g.gid == *gid_arg : g.name == group_arg) {
        if (g.gid > kMaxId) return out_of_range("gid", std::to_string(g.gid));
        out.gid = static_cast<gid_t>(g.gid);
        return out;
      }
    }
    if (!gid_arg) {
      return make_error(ENOENT, "unable to find group " + std::string(group_arg) + ": " +
                                    (group ? "no entry in the image's /etc/group"
                                           : "the image has no /etc/group"));
    }
    if (*gid_arg > kMaxId) return out_of_range("gid", group_arg);
    out.gid = static_cast<gid_t>(*gid_arg);
    return out;
  }
  for (const GroupEntry& g : groups) {
    for (const std::string& m : g.members) {
      if (m == matched_name && g.gid <= kMaxId) {
        out.groups.push_back(static_cast<gid_t>(g.gid));
        break;
      }
    }
  }
  return out;
}

}  // namespace imagefs::init
