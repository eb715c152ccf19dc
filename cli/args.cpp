// Parsing of subcommand options, sizes and their display.
#include "cli/args.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace imagefs::cli {

bool Args::has(std::string_view name) const { return values_.find(name) != values_.end(); }

std::optional<std::string> Args::get(std::string_view name) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> Args::all(std::string_view name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

Result<Args> parse_args(const std::vector<std::string>& args,
                        const std::vector<OptionSpec>& specs) {
  Args out;
  auto find = [&](std::string_view name, char short_name) -> const OptionSpec* {
    for (const OptionSpec& s : specs)
      if ((!name.empty() && s.name == name) || (short_name && s.short_name == short_name))
        return &s;
    return nullptr;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      out.positional_.insert(out.positional_.end(), args.begin() + static_cast<long>(i) + 1,
                             args.end());
      break;
    }
    const OptionSpec* spec = nullptr;
    std::optional<std::string> inline_value;
    if (a.starts_with("--")) {
      std::string_view body = std::string_view(a).substr(2);
      size_t eq = body.find('=');
      if (eq != std::string_view::npos) inline_value = std::string(body.substr(eq + 1));
      spec = find(body.substr(0, eq), 0);
      if (!spec) return make_error(EINVAL, "unknown option --" + std::string(body.substr(0, eq)));
    } else if (a.size() == 2 && a[0] == '-' && a[1] != '-') {
      spec = find("", a[1]);
      if (!spec) return make_error(EINVAL, "unknown option " + a);
    } else {
      out.positional_.push_back(a);
      continue;
    }
    std::vector<std::string>& slot = out.values_[spec->name];
    if (spec->arity == Arity::flag) {
      if (inline_value) return make_error(EINVAL, "option --" + spec->name + " takes no value");
      slot.emplace_back("1");
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= args.size())
        return make_error(EINVAL,
                          "option --" + spec->name + " needs a value (" + spec->metavar + ")");
      inline_value = args[++i];
    }
    if (spec->arity == Arity::value) slot.clear();
    slot.push_back(*inline_value);
  }
  return out;
}

std::string describe_options(const std::vector<OptionSpec>& specs) {
  std::vector<std::string> left;
  size_t width = 0;
  for (const OptionSpec& s : specs) {
    std::string l = s.short_name ? std::string("-") + s.short_name + ", " : "    ";
    l += "--" + s.name;
    if (s.arity != Arity::flag) l += " " + s.metavar;
    width = std::max(width, l.size());
    left.push_back(std::move(l));
  }
  std::string out;
  for (size_t i = 0; i < specs.size(); ++i) {
    out += "  " + left[i] + std::string(width - left[i].size() + 2, ' ') + specs[i].help;
    if (specs[i].arity == Arity::repeated) out += " (repeatable)";
    out += "\n";
  }
  return out;
}

Result<long> parse_number(const std::string& text, long lo, long hi, const std::string& what) {
  char* end = nullptr;
  long n = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || n < lo || n > hi)
    return make_error(EINVAL, what + " must be a number from " + std::to_string(lo) + " to " +
                                  std::to_string(hi) + ", not \"" + text + "\"");
  return n;
}

Result<uint64_t> parse_size(std::string_view text) {
  auto bad = [&] {
    return make_error(EINVAL, "invalid size \"" + std::string(text) +
                                  "\": expected a number with an optional K, M, G or T suffix");
  };
  size_t i = 0;
  while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) ++i;
  if (i == 0) return bad();
  std::string digits(text.substr(0, i));
  char* end = nullptr;
  double number = std::strtod(digits.c_str(), &end);
  if (end != digits.c_str() + digits.size()) return bad();  // "1.2.3"
  std::string suffix;
  for (char c : text.substr(i))
    suffix += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double scale = 1;
  if (suffix.empty() || suffix == "b") {
    scale = 1;
  } else {
    static constexpr std::string_view kUnits = "kmgt";
    size_t unit = kUnits.find(suffix[0]);
    std::string rest = suffix.substr(1);
    if (unit == std::string_view::npos || !(rest.empty() || rest == "b" || rest == "ib"))
      return bad();
    scale = std::pow(1024.0, static_cast<double>(unit + 1));
  }
  double bytes = number * scale;
  if (!std::isfinite(bytes) || bytes >= 1.8e19) return bad();
  return static_cast<uint64_t>(bytes);
}

std::string plural(uint64_t n, std::string_view noun) {
  return std::to_string(n) + " " + std::string(noun) + (n == 1 ? "" : "s");
}

std::string format_size(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  if (unit == 0)
    (void)std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else
    (void)std::snprintf(buf, sizeof buf, v < 10 ? "%.1f %s" : "%.0f %s", v, kUnits[unit]);
  return buf;
}

}  // namespace imagefs::cli
