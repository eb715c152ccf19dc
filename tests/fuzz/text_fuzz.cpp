// Fuzzes printable() (common/text.h), which stands between outside bytes and JSON, logs and
// terminals: its output always dumps as JSON (nlohmann throws on invalid UTF-8) and parses back
// the same, holds no control character, is at most four times as long, and is a fixed point.
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  std::string out = imagefs::printable(bytes);
  if (out.size() > 4 * size) std::abort();
  for (char c : out) {
    auto b = static_cast<unsigned char>(c);
    if (b < 0x20 || b == 0x7f) std::abort();
  }
  std::string dumped;
  try {
    dumped = nlohmann::json(out).dump();
  } catch (const nlohmann::json::exception&) {
    std::abort();
  }
  auto back = nlohmann::json::parse(dumped, nullptr, false);
  if (back.is_discarded() || back.get<std::string>() != out) std::abort();
  if (imagefs::printable(out) != out) std::abort();
  return 0;
}
