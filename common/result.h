// Result<T>: the value of an operation that can fail, or an Error a person can act on.
//
// Every fallible function in imagefs returns a Result. The Error carries an errno-like code, so
// fs/ can answer a FUSE request without translating, and a message written for the user
// ("registry 127.0.0.1:5000: 401 unauthorized for repository app"). Exceptions never cross a
// module boundary, a FUSE callback or a thread.
#pragma once

#include <cerrno>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

namespace imagefs {

struct Error {
  int code = EIO;       // an errno value: ENOENT, EACCES, EINVAL, EIO, ENOSPC, ...
  std::string message;  // complete sentence fragment, no trailing period or newline

  // The same error with `what` prepended: "what: message". Used to add context on the way up.
  [[nodiscard]] Error context(const std::string& what) const {
    return Error{code, what + ": " + message};
  }
};

inline Error make_error(int code, std::string message) { return Error{code, std::move(message)}; }

// Holds either a T or an Error. Access to the wrong alternative is a programming error
// (checked by std::get).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : state_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  [[nodiscard]] bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  [[nodiscard]] const Error& error() const { return std::get<1>(state_); }

 private:
  std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error)
      : error_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)

  [[nodiscard]] bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  [[nodiscard]] const Error& error() const { return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

}  // namespace imagefs

// IMAGEFS_TRY(var, expr): evaluates expr (a Result<T>); on error returns the error from the
// enclosing function, otherwise moves the value into a new variable `var`.
#define IMAGEFS_TRY(var, expr)                           \
  auto var##_result_ = (expr);                           \
  if (!var##_result_.ok()) return var##_result_.error(); \
  auto var = std::move(var##_result_).value()

// IMAGEFS_CHECK(expr): for Result<void>; returns the error from the enclosing function.
#define IMAGEFS_CHECK(expr)                                                             \
  do {                                                                                  \
    if (auto check_result_ = (expr); !check_result_.ok()) return check_result_.error(); \
  } while (0)
