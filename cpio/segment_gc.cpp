// gc of segment and plan files by last use (docs/STORE_FORMAT.md, "Archive segments").
#include "cpio/segment_gc.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <system_error>

#include "common/errno_error.h"
#include "common/unique_fd.h"
#include "cpio/options.h"
#include "cpio/plan_store.h"
#include "cpio/segment.h"

namespace imagefs::cpio {

namespace fs = std::filesystem;

Result<SegmentGcReport> remove_unused_segments(const fs::path& store_root, int64_t unused_since) {
  SegmentGcReport report;
  for (Format format : {Format::gzip, Format::zstd, Format::none}) {
    const fs::path dir = detail::segment_path(store_root, format, "").parent_path();
    std::error_code ec;
    fs::directory_iterator it(dir, ec);
    if (ec) {
      if (ec.value() == ENOENT) continue;
      return errno_error(ec.value(), "cannot list", dir);
    }
    for (const fs::directory_entry& entry : it) {
      const std::string name = entry.path().filename().string();
      const bool tmp = name.ends_with(".tmp");
      const std::string key = tmp ? name.substr(0, name.size() - 4) : name;
      if (key.size() != 64 || key.find_first_not_of("0123456789abcdef") != std::string::npos)
        continue;  // not ours
      struct stat st {};
      if (::lstat(entry.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      if (tmp) {
        // A builder holds its temporary file locked; one nobody holds was left by a crash. A
        // builder that opened it just before the unlink finds the name gone and starts over.
        UniqueFd fd(::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC));
        if (fd.get() < 0 || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;
      } else if (st.st_mtim.tv_sec >= unused_since) {
        continue;
      }
      if (::unlink(entry.path().c_str()) != 0) {
        if (errno == ENOENT) continue;
        return errno_error(errno, "cannot remove", entry.path());
      }
      ++report.removed;
      report.bytes_freed += static_cast<uint64_t>(st.st_size);
    }
  }
  IMAGEFS_TRY(plans, detail::remove_unused_plans(store_root, unused_since));
  report.plans_removed = plans.removed;
  report.bytes_freed += plans.bytes_freed;
  return report;
}

}  // namespace imagefs::cpio
