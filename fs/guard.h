// The wall at the FUSE boundary (and around other thread bodies): whatever a request's handler
// throws ends as an EIO answer to that request and one log line, never as std::terminate for
// every reader of the mount. No FUSE here, so unit tests call it directly; fs/ops.cpp wraps
// every callback in it.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <string_view>

#include "common/text.h"

namespace imagefs::fs {

// Where the daemon's log lines go (the daemon's log file, or stderr with -f). Called from any
// thread; it must serialize its own writes.
using LogSink = std::function<void(const std::string& line)>;

// Runs `body`, which answers one request. If it throws anything, runs `fail` (which answers the
// request, with EIO) and writes one line to `log` naming `op`, `ino` and the exception's what(),
// as printable text. Never throws: a throwing `fail` or `log` is swallowed.
//
// "Answered once" rests on a contract the handlers in fs/ops.cpp keep: a handler answers its
// request as its last step, and nothing after the answer can throw (libfuse's reply functions are
// C and do not), so an exception means no answer was sent. Returns whether `body` ended normally.
template <class Body, class Fail>
bool guarded(std::string_view op, uint64_t ino, const LogSink& log, Body&& body,
             Fail&& fail) noexcept {
  std::exception_ptr error;
  try {
    body();
    return true;
  } catch (...) {
    error = std::current_exception();
  }
  try {
    fail();
  } catch (...) {  // NOLINT(bugprone-empty-catch): nothing more can be done for this request
  }
  try {
    std::string what;
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
      what = "an exception that is not a std::exception";
    }
    if (log) {
      log("internal error in " + std::string(op) + " (inode " + std::to_string(ino) +
          "): " + printable(what) + "; answered EIO");
    }
  } catch (...) {  // NOLINT(bugprone-empty-catch): the log itself failed (out of memory)
  }
  return false;
}

}  // namespace imagefs::fs
