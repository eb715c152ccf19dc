// Fuzzes entry-name cleaning: no crash, a cleaned path never leaves the root (no "..", no leading
// '/', no empty or "." component), and cleaning is idempotent.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "overlay/entry_name.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view raw(reinterpret_cast<const char*>(data), size);
  auto name = imagefs::overlay::parse_entry_name(raw);
  if (!name.ok()) return 0;
  auto cleaned = imagefs::overlay::clean_path(raw);
  if (!cleaned.ok()) std::abort();
  const std::string& p = *cleaned;
  if (!p.empty()) {
    if (p.front() == '/' || p.back() == '/' || p.find("//") != std::string::npos) std::abort();
    std::string_view rest = p;
    while (!rest.empty()) {
      size_t slash = rest.find('/');
      std::string_view part = rest.substr(0, slash);
      if (part == ".." || part == ".") std::abort();
      rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
    }
    auto twice = imagefs::overlay::clean_path(p);
    if (!twice.ok() || *twice != p) std::abort();
  }
  return 0;
}
