// Platform normalization and matching, following containerd's platforms package (which docker
// uses): the same spelling rules and the same "newer variant runs older variant" compatibility.
#include "registry/platform.h"

#include <sys/utsname.h>

#include <algorithm>
#include <cctype>
#include <optional>

namespace imagefs::registry {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool valid_component(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
  });
}

bool is_known_os(std::string_view os) {
  for (std::string_view k : {"linux", "windows", "darwin", "freebsd", "netbsd", "openbsd",
                             "solaris", "illumos", "aix", "android", "ios", "plan9"}) {
    if (os == k) return true;
  }
  return false;
}

bool is_known_arch(std::string_view arch) {
  for (std::string_view k :
       {"386",    "amd64",  "arm",      "arm64",   "ppc64", "ppc64le", "s390x",  "riscv64", "mips",
        "mipsle", "mips64", "mips64le", "loong64", "wasm",  "i386",    "i486",   "i586",    "i686",
        "x86_64", "x86-64", "aarch64",  "armhf",   "armel", "armv6l",  "armv7l", "armv8l"}) {
    if (arch == k) return true;
  }
  return false;
}

// The variant's rank among those an architecture orders ("v7" -> 7; amd64's "" -> 1), or nullopt
// when variants of this architecture are not comparable.
std::optional<int> variant_rank(const Platform& p) {
  if (p.architecture == "amd64" && p.variant.empty()) return 1;
  if (p.architecture != "arm" && p.architecture != "arm64" && p.architecture != "amd64")
    return std::nullopt;
  if (p.variant.size() < 2 || p.variant[0] != 'v') return std::nullopt;
  int n = 0;
  for (size_t i = 1; i < p.variant.size(); ++i) {
    char c = p.variant[i];
    if (c < '0' || c > '9' || n > 1000) return std::nullopt;
    n = n * 10 + (c - '0');
  }
  return n;
}

bool listable(const Platform& p) { return !p.os.empty() && p.os != "unknown"; }

}  // namespace

std::string Platform::str() const {
  if (os.empty() && architecture.empty()) return "";
  std::string s = os + "/" + architecture;
  if (!variant.empty()) s += "/" + variant;
  return s;
}

Platform normalize(Platform p) {
  p.os = lower(p.os);
  p.architecture = lower(p.architecture);
  p.variant = lower(p.variant);
  if (p.os == "macos") p.os = "darwin";
  std::string& arch = p.architecture;
  std::string& variant = p.variant;
  if (arch == "i386" || arch == "i486" || arch == "i586" || arch == "i686" || arch == "x86") {
    arch = "386";
    variant.clear();
  } else if (arch == "x86_64" || arch == "x86-64" || arch == "amd64") {
    arch = "amd64";
    if (variant == "v1" || variant == "1") variant.clear();
    if (variant.size() == 1 && variant[0] >= '2' && variant[0] <= '4') variant = "v" + variant;
  } else if (arch == "aarch64" || arch == "arm64") {
    arch = "arm64";
    if (variant.empty() || variant == "8") variant = "v8";
    if (variant == "9") variant = "v9";
  } else if (arch == "armhf") {
    arch = "arm";
    variant = "v7";
  } else if (arch == "armel") {
    arch = "arm";
    variant = "v6";
  } else if (arch == "armv5l" || arch == "armv6l" || arch == "armv7l" || arch == "armv8l") {
    variant = std::string("v") + arch[4];
    arch = "arm";
  } else if (arch == "arm") {
    if (variant.empty()) variant = "v7";
    if (variant.size() == 1 && variant[0] >= '5' && variant[0] <= '8') variant = "v" + variant;
  }
  return p;
}

Result<Platform> parse_platform(std::string_view text) {
  auto invalid = [&](const std::string& why) {
    return make_error(EINVAL, "invalid platform \"" + std::string(text) + "\": " + why);
  };
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t slash = text.find('/', start);
    parts.push_back(
        lower(text.substr(start, slash == std::string_view::npos ? slash : slash - start)));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (parts.size() > 3) return invalid("expected os/architecture[/variant]");
  for (const std::string& part : parts) {
    if (!valid_component(part))
      return invalid("expected os/architecture[/variant] with letters, digits, '.', '_', '-'");
  }
  Platform p;
  if (parts.size() == 1) {
    Platform host = host_platform();
    if (is_known_os(parts[0])) {
      p = Platform{parts[0], host.architecture, host.variant};
    } else if (is_known_arch(parts[0])) {
      p = Platform{host.os, parts[0], ""};
    } else {
      return invalid("\"" + parts[0] + "\" is neither a known os nor a known architecture");
    }
  } else {
    p.os = parts[0];
    p.architecture = parts[1];
    if (parts.size() == 3) p.variant = parts[2];
  }
  return normalize(std::move(p));
}

Platform host_platform() {
  Platform p{"linux", "", ""};
#if defined(__x86_64__)
  p.architecture = "amd64";
#elif defined(__aarch64__)
  p.architecture = "arm64";
#elif defined(__arm__) && defined(__ARM_ARCH)
  p.architecture = "arm";
  p.variant = "v" + std::to_string(__ARM_ARCH);
#elif defined(__i386__)
  p.architecture = "386";
#elif defined(__powerpc64__) && defined(__LITTLE_ENDIAN__)
  p.architecture = "ppc64le";
#elif defined(__s390x__)
  p.architecture = "s390x";
#elif defined(__riscv) && __riscv_xlen == 64
  p.architecture = "riscv64";
#else
  struct utsname u {};
  if (uname(&u) == 0) p.architecture = u.machine;
#endif
  return normalize(std::move(p));
}

Result<size_t> choose_platform(const std::vector<Platform>& available, const Platform& want_in) {
  Platform want = normalize(want_in);
  for (size_t i = 0; i < available.size(); ++i) {
    if (normalize(available[i]) == want) return i;
  }
  std::optional<size_t> best;
  int best_rank = -1;
  std::optional<int> want_rank = variant_rank(want);
  if (want_rank) {
    for (size_t i = 0; i < available.size(); ++i) {
      Platform p = normalize(available[i]);
      if (p.os != want.os || p.architecture != want.architecture) continue;
      std::optional<int> rank = variant_rank(p);
      if (rank && *rank <= *want_rank && *rank > best_rank) {
        best = i;
        best_rank = *rank;
      }
    }
  }
  if (best) return *best;

  std::vector<std::string> seen;
  std::string list;
  for (const Platform& p : available) {
    if (!listable(p)) continue;
    std::string s = normalize(p).str();
    if (std::find(seen.begin(), seen.end(), s) != seen.end()) continue;
    seen.push_back(s);
    list += (list.empty() ? "" : ", ") + s;
  }
  if (list.empty()) list = "no platforms listed";
  return make_error(ENOENT, "no image for platform " + want.str() + "; the image has: " + list);
}

}  // namespace imagefs::registry
