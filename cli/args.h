// A small command-line parser for imagefs' subcommands: GNU-style long options ("--name VALUE",
// "--name=VALUE"), repeatable options, flags and positional arguments. getopt_long would need
// global state and gives poor messages for subcommands; this gives errors that name the option.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace imagefs::cli {

enum class Arity { flag, value, repeated };

struct OptionSpec {
  std::string name;  // without dashes: "platform"
  Arity arity = Arity::value;
  std::string help;  // one line for the command's usage text
  std::string metavar = "VALUE";
  char short_name = 0;  // e.g. 'f' for -f, 0 for none
};

class Args {
 public:
  [[nodiscard]] bool has(std::string_view name) const;
  [[nodiscard]] std::optional<std::string> get(std::string_view name) const;
  [[nodiscard]] std::vector<std::string> all(std::string_view name) const;
  [[nodiscard]] const std::vector<std::string>& positional() const { return positional_; }
  // Gives option `name` these values (a configuration file's defaults, cli/config.h).
  void set_default(const std::string& name, std::vector<std::string> values) {
    values_[name] = std::move(values);
  }

 private:
  friend Result<Args> parse_args(const std::vector<std::string>&, const std::vector<OptionSpec>&);
  std::map<std::string, std::vector<std::string>, std::less<>> values_;
  std::vector<std::string> positional_;
};

// Parses `args` against `specs`. "--" ends options. Errors (EINVAL) name the unknown option or
// the option missing its value.
Result<Args> parse_args(const std::vector<std::string>& args, const std::vector<OptionSpec>& specs);

// Usage lines for `specs`, aligned, for a command's help text.
std::string describe_options(const std::vector<OptionSpec>& specs);

// Parses a size such as "10G", "512MiB", "1.5g", "1000000" (bytes; K/M/G/T are powers of 1024).
Result<uint64_t> parse_size(std::string_view text);

// A whole number from `lo` to `hi` given to option `what` ("--ttl"); EINVAL saying the range.
Result<long> parse_number(const std::string& text, long lo, long hi, const std::string& what);

// "1 segment", "19 segments": `noun` (singular, taking an s) counted.
std::string plural(uint64_t n, std::string_view noun);

// "1.5 GiB", "312 KiB", "17 B".
std::string format_size(uint64_t bytes);

}  // namespace imagefs::cli
