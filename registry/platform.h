// Platforms ("linux/arm64/v8") as OCI image indexes name them, normalized the way containerd and
// docker do, and the choice of one manifest from an index for a wanted platform.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace imagefs::registry {

struct Platform {
  std::string os;            // "linux"
  std::string architecture;  // "amd64", "arm64", "arm", "386", "ppc64le", ...
  std::string variant;       // "v8", "v7", "v3" or ""

  // "linux/amd64", "linux/arm64/v8"; "" for an empty platform.
  [[nodiscard]] std::string str() const;
  friend bool operator==(const Platform&, const Platform&) = default;
};

// The same platform in canonical spelling: aarch64 = arm64 (variant v8 implied), x86_64 = amd64
// (variant v1 = none), armhf = arm/v7, armel = arm/v6, arm = arm/v7, i686 = 386, and lowercase.
Platform normalize(Platform platform);

// Parses "os/arch[/variant]" (or just "os" or just "arch", completed with the host's), normalized.
// EINVAL with the reason for anything else.
Result<Platform> parse_platform(std::string_view text);

// The platform this binary runs on, normalized ("linux/amd64" on x86-64).
Platform host_platform();

// Picks the entry of `available` (index order) to use for `want`: an exact match (after
// normalizing both) first, else the most capable compatible one (arm64/v8 runs arm64 without a
// variant, arm/v7 runs arm/v6, amd64/v3 runs amd64). ENOENT if none fits, listing the platforms
// `available` has (entries with an empty or "unknown" os, such as attestations, are not listed).
Result<size_t> choose_platform(const std::vector<Platform>& available, const Platform& want);

}  // namespace imagefs::registry
