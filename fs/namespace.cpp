// Paths under the mount point as references (fs/namespace.h has the rules).
#include "fs/namespace.h"

#include <algorithm>
#include <cctype>

namespace imagefs::fs {
namespace {

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c));
  });
}

// "ghcr.io", "localhost", "localhost:5000", "127.0.0.1:5000", "[::1]:5000".
bool looks_like_host(std::string_view c) {
  if (!c.empty() && c.front() == '[') return true;
  size_t colon = c.find(':');
  std::string_view host = c.substr(0, colon);
  if (colon != std::string_view::npos && !all_digits(c.substr(colon + 1))) return false;
  return host == "localhost" || host.find('.') != std::string_view::npos;
}

Error not_a_reference(std::string_view path, const Error& why) {
  return make_error(ENOENT,
                    "\"" + std::string(path) + "\" is not an image reference: " + why.message);
}

}  // namespace

Result<PathInfo> classify(std::string_view path) {
  if (path.empty()) return make_error(EINVAL, "the top level is not a reference");
  size_t slash = path.rfind('/');
  std::string_view last = slash == std::string_view::npos ? path : path.substr(slash + 1);
  bool single = slash == std::string_view::npos;
  if (single && looks_like_host(path)) {
    auto below = registry::parse_reference(std::string(path) + "/x");
    if (!below.ok()) return not_a_reference(path, below.error());
    return PathInfo{DirKind::level, std::nullopt};
  }
  auto ref = registry::parse_reference(path);
  if (last.find_first_of(":@") != std::string_view::npos) {
    if (!ref.ok()) return not_a_reference(path, ref.error());
    return PathInfo{DirKind::image, std::move(*ref)};
  }
  if (ref.ok()) return PathInfo{DirKind::both, std::move(*ref)};
  // Not an image by itself, but maybe the start of one ("docker.io/library"). A single
  // component that does not look like a host ("Python") is neither: docker would take it for a
  // registry only because of the '/' after it.
  if (single) return not_a_reference(path, ref.error());
  auto below = registry::parse_reference(std::string(path) + "/x");
  if (!below.ok()) return not_a_reference(path, ref.error());
  return PathInfo{DirKind::level, std::nullopt};
}

Result<std::string> child_path(std::string_view path, std::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos)
    return make_error(ENOENT, "\"" + std::string(name) + "\" cannot be part of a reference");
  if (path.empty()) return std::string(name);
  return std::string(path) + "/" + std::string(name);
}

std::vector<std::string> list_level(const std::vector<store::RefRecord>& refs,
                                    const std::string& platform, std::string_view path) {
  std::vector<std::string> names;
  std::string prefix = path.empty() ? "" : std::string(path) + "/";
  for (const store::RefRecord& r : refs) {
    if (r.platform != platform) continue;
    auto ref = registry::parse_reference(r.reference);
    if (!ref.ok()) continue;
    // Below the top, both spellings reach the image: its short name, and its full one under its
    // registry ("docker.io/library/python:3.12"). The top lists short names only, as `docker
    // images` shows them (not "docker.io" next to every Docker Hub image).
    std::vector<std::string> spellings{ref->familiar()};
    if (!path.empty()) spellings.push_back(ref->str());
    // A short name that would read as a registry host ("foo.bar:1" for
    // docker.io/library/foo.bar:1) is listed by its full name, which reaches it.
    if (path.empty() && spellings[0].find('/') == std::string::npos &&
        looks_like_host(spellings[0]))
      spellings[0] = ref->str();
    for (const std::string& name : spellings) {
      if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
      std::string_view rest = std::string_view(name).substr(prefix.size());
      // A digest holds a ':' but no '/', so the next '/' always ends the component.
      names.emplace_back(rest.substr(0, rest.find('/')));
    }
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

Result<registry::Platform> parse_platform_dir(std::string_view name) {
  std::string text(name);
  std::replace(text.begin(), text.end(), '-', '/');
  if (std::count(text.begin(), text.end(), '/') < 1)
    return make_error(ENOENT, "\"" + std::string(name) +
                                  "\" is not a platform: write os-arch or os-arch-variant, "
                                  "like linux-arm64 or linux-arm-v7");
  auto platform = registry::parse_platform(text);
  if (!platform.ok()) return make_error(ENOENT, platform.error().message);
  return platform;
}

std::string platform_dir_name(const registry::Platform& platform) {
  std::string text = platform.str();
  std::replace(text.begin(), text.end(), '/', '-');
  return text;
}

}  // namespace imagefs::fs
