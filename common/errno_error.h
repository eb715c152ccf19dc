// Errors from failed system calls: the errno value kept as the Error's code (so fs/ can hand it
// to the kernel) and strerror's text in the message. The one place imagefs turns errno into words.
#pragma once

#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/result.h"

namespace imagefs {

// strerror(err), without strerror's shared buffer (any thread may call this).
inline std::string errno_text(int err) {
  char buf[256];
  // The GNU strerror_r (C++ on glibc defines _GNU_SOURCE): returns the text, not always in buf.
  return ::strerror_r(err, buf, sizeof buf);
}

// "WHAT: strerror(err)", with code `err`: errno_error(errno, "cannot open " + path).
inline Error errno_error(int err, std::string what) {
  return make_error(err, std::move(what) + ": " + errno_text(err));
}

// "WHAT PATH: strerror(err)", with code `err`: errno_error(errno, "cannot open", path).
inline Error errno_error(int err, std::string_view what, const std::filesystem::path& path) {
  return make_error(err, std::string(what) + " " + path.string() + ": " + errno_text(err));
}

}  // namespace imagefs
