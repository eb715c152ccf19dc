// Image references ("python:3.12", "ghcr.io/org/app@sha256:...") parsed and normalized exactly as
// docker does, so a name means the same image here as in `docker pull`.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace imagefs::registry {

struct Reference {
  std::string domain;      // "docker.io", "ghcr.io", "localhost:5000", "[::1]:5000"
  std::string repository;  // "library/python", "org/team/app"
  std::string tag;         // "3.12"; "latest" if neither tag nor digest was given; else may be ""
  std::string digest;      // "sha256:<64 hex>" or ""; when set it decides what is pulled

  // Fully qualified: "docker.io/library/python:3.12", "ghcr.io/app:1@sha256:...".
  [[nodiscard]] std::string str() const;
  // Docker's short form: "python:3.12", "user/app:1"; other registries keep their domain.
  [[nodiscard]] std::string familiar() const;
  // The domain and repository without tag or digest: "docker.io/library/python".
  [[nodiscard]] std::string name() const { return domain + "/" + repository; }

  friend bool operator==(const Reference&, const Reference&) = default;
};

inline constexpr std::string_view kDefaultDomain = "docker.io";

// Parses and normalizes `text`. Errors (EINVAL) say what is wrong: "invalid reference
// \"Python\": repository name must be lowercase".
Result<Reference> parse_reference(std::string_view text);

}  // namespace imagefs::registry
