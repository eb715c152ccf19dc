// Fuzzes reference parsing: no crash, and every accepted reference's canonical form parses back
// to the same reference.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "registry/reference.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto ref = imagefs::registry::parse_reference(text);
  if (!ref.ok()) return 0;
  auto again = imagefs::registry::parse_reference(ref->str());
  if (!again.ok() || !(*again == *ref)) std::abort();
  auto familiar = imagefs::registry::parse_reference(ref->familiar());
  if (!familiar.ok() || !(*familiar == *ref)) std::abort();
  return 0;
}
