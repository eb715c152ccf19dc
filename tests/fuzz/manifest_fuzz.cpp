// Fuzzes manifest, index and config parsing: no crash, no exception, and the media-type decision
// agrees with the parser's.
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "registry/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the Content-Type the "registry" sent.
  static constexpr std::string_view kTypes[] = {
      "",
      "application/json",
      imagefs::registry::media_type::kOciManifest,
      imagefs::registry::media_type::kOciIndex,
      imagefs::registry::media_type::kDockerManifest,
      imagefs::registry::media_type::kDockerManifestList,
      imagefs::registry::media_type::kDockerSchema1Signed,
      "application/vnd.example+json; charset=utf-8",
  };
  std::string_view type = kTypes[data[0] % (sizeof kTypes / sizeof kTypes[0])];
  std::string_view doc(reinterpret_cast<const char*>(data) + 1, size - 1);

  auto parsed = imagefs::registry::parse_manifest(doc, type);
  auto media = imagefs::registry::manifest_media_type(doc, type);
  if (parsed.ok()) {
    if (!media.ok()) std::abort();
    bool index = std::holds_alternative<imagefs::registry::ImageIndex>(parsed.value());
    if (index != imagefs::registry::media_type::is_index(media.value())) std::abort();
    if (!index && !imagefs::registry::media_type::is_manifest(media.value())) std::abort();
  } else if (parsed.error().message.empty()) {
    std::abort();
  }
  auto config = imagefs::registry::parse_image_config(doc);
  if (!config.ok() && config.error().message.empty()) std::abort();
  return 0;
}
