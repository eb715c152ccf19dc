// Fuzzes WWW-Authenticate parsing: no crash, and what was parsed, written back in canonical form,
// parses to the same challenges.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "registry/www_authenticate.h"

namespace {

std::string quote(const std::string& value) {
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

std::string canonical(const std::vector<imagefs::registry::Challenge>& challenges) {
  std::string out;
  for (const auto& c : challenges) {
    if (!out.empty()) out += ", ";
    out += c.scheme;
    if (!c.token68.empty()) {
      out += " " + c.token68;
      continue;
    }
    bool first = true;
    for (const auto& [name, value] : c.params) {
      out += first ? " " : ", ";
      first = false;
      out += name + "=" + quote(value);
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto challenges = imagefs::registry::parse_www_authenticate(text);
  for (const auto& c : challenges) {
    if (c.scheme.empty()) std::abort();
    if (!c.token68.empty() && !c.params.empty()) std::abort();
  }
  auto again = imagefs::registry::parse_www_authenticate(canonical(challenges));
  if (again != challenges) std::abort();
  return 0;
}
