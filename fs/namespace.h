// The directory tree of references under a mount point: which paths are images, which are
// levels of a name ("ghcr.io/", "ghcr.io/org/"), and what a level lists. Pure logic over
// registry::Reference; fs/filesystem.cpp asks it before anything touches a registry.
//
// A path is the mount-relative directory path with '/' between components, as the user typed
// it: "python:3.12", "ghcr.io/org/app:1.0", "alpine@sha256:...". The rules, in order:
//  - A single component that looks like a registry host (it has a '.' before any ':', is
//    "localhost", or is a bracketed IPv6 address, with an optional numeric port) is a level only:
//    "ghcr.io", "localhost:5000", "127.0.0.1:5000". (docker would read "localhost:5000" alone as
//    the image localhost with tag 5000; under a mount, a registry is far more likely.)
//  - A path whose last component carries a tag or a digest is an image only: it has no levels
//    below it ("python:3.12", "org/app@sha256:...").
//  - Any other valid reference ("alpine", "org/app") is both: the image with the tag "latest"
//    and the level above longer names ("org/app/sub:1"). Lookups of the image's file names
//    reach the image; other names go one level down.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "registry/platform.h"
#include "registry/reference.h"
#include "store/catalog.h"

namespace imagefs::fs {

enum class DirKind {
  level,  // only a level of names
  image,  // only an image
  both,   // the image with an implied ":latest" and a level
};

struct PathInfo {
  DirKind kind = DirKind::level;
  std::optional<registry::Reference> reference;  // set unless kind == level
};

// What the directory at `path` is; ENOENT (with the parser's reason) when no reference can have
// `path` as its name or prefix.
Result<PathInfo> classify(std::string_view path);

// `path` extended by one component, or ENOENT when `name` cannot be one ("", ".", "..", a '/').
Result<std::string> child_path(std::string_view path, std::string_view name);

// The names directly under `path` ("" for the top level) among the references the store has
// resolved for `platform`, by their short names (docker's familiar form): "python:3.12" at the
// top, "localhost:5000" at the top and "demo" below it for "localhost:5000/demo/app:1". Sorted,
// without duplicates.
std::vector<std::string> list_level(const std::vector<store::RefRecord>& refs,
                                    const std::string& platform, std::string_view path);

// The platforms under MOUNT/.platform are named "os-arch" or "os-arch-variant"
// ("linux-arm64", "linux-arm-v7"), a single component each.
inline constexpr std::string_view kPlatformDir = ".platform";
Result<registry::Platform> parse_platform_dir(std::string_view name);
std::string platform_dir_name(const registry::Platform& platform);

}  // namespace imagefs::fs
