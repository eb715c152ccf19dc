// Lexical cleaning and whiteout classification of tar entry names.
#include "overlay/entry_name.h"

#include <vector>

namespace imagefs::overlay {
namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

}  // namespace

Result<std::string> clean_path(std::string_view raw) {
  if (raw.empty()) return make_error(EINVAL, "empty entry name");
  if (raw.find('\0') != std::string_view::npos)
    return make_error(EINVAL, "entry name contains a NUL byte");
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (start <= raw.size()) {
    size_t end = raw.find('/', start);
    if (end == std::string_view::npos) end = raw.size();
    std::string_view part = raw.substr(start, end - start);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();  // ".." at the root stays at the root
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    start = end + 1;
  }
  std::string out;
  for (std::string_view p : parts) {
    if (!out.empty()) out += '/';
    out += p;
  }
  return out;
}

Result<EntryName> parse_entry_name(std::string_view raw) {
  IMAGEFS_TRY(path, clean_path(raw));
  if (path.empty()) return EntryName{NameKind::root, ""};
  size_t slash = path.rfind('/');
  std::string_view base = std::string_view(path).substr(slash == std::string::npos ? 0 : slash + 1);
  std::string dir = slash == std::string::npos ? "" : path.substr(0, slash);
  if (base == kOpaqueMarker) return EntryName{NameKind::opaque, dir};
  if (base == kWhiteoutPrefix) return EntryName{NameKind::bare_whiteout, dir};
  if (base.starts_with(kWhiteoutPrefix)) {
    std::string hidden(base.substr(kWhiteoutPrefix.size()));
    return EntryName{NameKind::whiteout, dir.empty() ? hidden : dir + "/" + hidden};
  }
  return EntryName{NameKind::path, std::move(path)};
}

}  // namespace imagefs::overlay
