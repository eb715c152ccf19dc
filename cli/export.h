// The two writers of `imagefs export`: a merged tree written out as a directory or as a pax tar
// file. The command (export_command.cpp) opens the image; these only write.
#pragma once

#include <filesystem>

#include "common/result.h"
#include "overlay/tree.h"

namespace imagefs::cli {

// Writes `tree` into `dir`, a new directory or an empty one of this user (see open_export_root
// in beneath.h). Every entry is created, owned, chmodded, timed and given its xattrs through
// descriptors of directories opened beneath `dir` without following symlinks, so nobody can
// redirect a write, a chown or a chmod out of it; `dir` stays 0700 until everything else is done
// and gets the image root's metadata last. As root, owners, device nodes and every xattr are
// restored; otherwise owners and device nodes are skipped when refused (EPERM), and so are
// xattrs the file system or the user may not set. On failure `dir` keeps what was written, still
// mode 0700.
Result<void> export_to_dir(overlay::Tree& tree, const std::filesystem::path& dir);

// Writes `tree` as a pax tar file: to a temporary file beside `file` (created O_EXCL|O_NOFOLLOW,
// mode 0600), renamed over `file` once complete, with the mode a new file gets. Names and link
// targets are written as they are: UTF-8 in pax records, and where one is not valid UTF-8 that
// entry alone says `hdrcharset=BINARY` (GNU tar warns about that keyword, so only such names
// cause a warning). Xattrs go in SCHILY.xattr records, which GNU tar and bsdtar both read.
Result<void> export_to_tar(overlay::Tree& tree, const std::filesystem::path& file);

}  // namespace imagefs::cli
