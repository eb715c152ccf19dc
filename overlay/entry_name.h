// Names of layer tar entries: cleaned into paths that cannot leave the image root, and
// classified as ordinary paths or OCI whiteouts (".wh.NAME", ".wh..wh..opq").
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace imagefs::overlay {

enum class NameKind {
  root,           // the entry is the image root itself ("./", "/")
  path,           // an ordinary file, directory, link or device
  whiteout,       // ".wh.NAME": hides NAME of lower layers; `path` is NAME's path
  opaque,         // ".wh..wh..opq": hides the lower contents of its directory; `path` is it
  bare_whiteout,  // ".wh." alone: hides nothing (it must not delete its directory)
};

struct EntryName {
  NameKind kind = NameKind::path;
  std::string path;  // relative, cleaned: no leading '/', no "." or ".." components, no "//"
};

// Cleans `raw` as if rooted at "/": "./a//b/../c" -> "a/c", "../../etc" -> "etc" (a name can
// never reach outside the root), then classifies it. Fails (EINVAL) for a name with NUL or an
// empty name.
Result<EntryName> parse_entry_name(std::string_view raw);

// Cleans a hardlink target the same way (it names a path in the same image).
Result<std::string> clean_path(std::string_view raw);

}  // namespace imagefs::overlay
