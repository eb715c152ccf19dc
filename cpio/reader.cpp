// Archives read from their segment files: an offset maps to one segment by binary search, segment
// files are opened on demand, and a whole archive is copied inside the kernel where it can be.
#include "cpio/reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "common/errno_error.h"
#include "common/mutex.h"
#include "common/unique_fd.h"

namespace imagefs::cpio {

namespace fs = std::filesystem;
using detail::SegmentRef;

Result<void> write_through_read(const Archive& archive, uint64_t offset, int fd,
                                const fs::path& name) {
  std::vector<uint8_t> buffer(size_t{1} << 20);
  for (uint64_t at = offset; at < archive.size();) {
    IMAGEFS_TRY(n, archive.read(at, buffer));
    if (n == 0) return make_error(EIO, "the archive ended early at byte " + std::to_string(at));
    for (size_t done = 0; done < n;) {
      ssize_t w = ::write(fd, buffer.data() + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return errno_error(errno, "cannot write", name);
      done += static_cast<size_t>(w);
    }
    at += n;
  }
  return {};
}

namespace {

class ArchiveImpl final : public Archive {
 public:
  ArchiveImpl(std::vector<fs::path> paths, const std::vector<SegmentRef>& refs, ArchiveStats stats)
      : paths_(std::move(paths)), stats_(stats) {
    starts_.reserve(refs.size());
    for (const SegmentRef& r : refs) {
      starts_.push_back(size_);
      sizes_.push_back(r.compressed);
      size_ += r.compressed;
    }
  }

  [[nodiscard]] uint64_t size() const override { return size_; }
  [[nodiscard]] const ArchiveStats& stats() const override { return stats_; }

  Result<size_t> read(uint64_t offset, std::span<uint8_t> out) const override {
    if (offset >= size_ || out.empty()) return size_t{0};
    size_t i = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), offset) -
                                   starts_.begin()) -
               1;
    size_t filled = 0;
    while (filled < out.size() && i < starts_.size()) {
      const uint64_t within = offset + filled - starts_[i];
      const size_t want =
          static_cast<size_t>(std::min<uint64_t>(out.size() - filled, sizes_[i] - within));
      if (want > 0) {
        IMAGEFS_TRY(fd, fd_for(i));
        size_t got = 0;
        while (got < want) {
          ssize_t n = ::pread(fd->get(), out.data() + filled + got, want - got,
                              static_cast<off_t>(within + got));
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) return errno_error(errno, "cannot read archive segment", paths_[i]);
          if (n == 0)
            return make_error(EIO, "archive segment " + paths_[i].string() +
                                       " is damaged: shorter than its plan says");
          got += static_cast<size_t>(n);
        }
        filled += want;
      }
      ++i;
    }
    return filled;
  }

  Result<void> write_to(int fd, const fs::path& name) const override {
    for (size_t i = 0; i < paths_.size(); ++i) {
      if (sizes_[i] == 0) continue;
      IMAGEFS_TRY(in, fd_for(i));
      loff_t at = 0;
      while (static_cast<uint64_t>(at) < sizes_[i]) {
        ssize_t n =
            ::copy_file_range(in->get(), &at, fd, nullptr,
                              static_cast<size_t>(sizes_[i] - static_cast<uint64_t>(at)), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP ||
                      errno == EBADF)) {
          // Not between these files (another file system, a pipe): the rest through read(), from
          // the first byte this segment did not copy (the output's offset has moved that far).
          return write_through_read(*this, starts_[i] + static_cast<uint64_t>(at), fd, name);
        }
        if (n < 0) return errno_error(errno, "cannot write", name);
        if (n == 0)
          return make_error(EIO, "archive segment " + paths_[i].string() +
                                     " is damaged: shorter than its plan says");
      }
    }
    return {};
  }

 private:
  // Segment files are opened on demand: an image has hundreds or thousands of segments and a
  // daemon serves many archives, too many to hold open. The last one used stays open, since
  // consecutive reads mostly fall in one segment.
  Result<std::shared_ptr<UniqueFd>> fd_for(size_t i) const {
    {
      MutexLock lock(mu_);
      if (open_index_ == i && open_fd_) return open_fd_;
    }
    auto fd = std::make_shared<UniqueFd>(::open(paths_[i].c_str(), O_RDONLY | O_CLOEXEC));
    if (fd->get() < 0) {
      Error e = errno_error(errno, "cannot open archive segment", paths_[i]);
      if (e.code == ENOENT) e.code = EIO;  // removed under us: the archive is damaged
      return e;
    }
    MutexLock lock(mu_);
    open_index_ = i;
    open_fd_ = fd;
    return fd;
  }

  std::vector<fs::path> paths_;
  std::vector<uint64_t> starts_;
  std::vector<uint64_t> sizes_;
  uint64_t size_ = 0;
  ArchiveStats stats_;
  mutable Mutex mu_;
  mutable size_t open_index_ GUARDED_BY(mu_) = SIZE_MAX;
  mutable std::shared_ptr<UniqueFd> open_fd_ GUARDED_BY(mu_);
};

}  // namespace

Result<void> Archive::write_to(int fd, const fs::path& name) const {
  return write_through_read(*this, 0, fd, name);
}

namespace detail {

std::shared_ptr<const Archive> open_archive(std::vector<fs::path> paths,
                                            const std::vector<SegmentRef>& segments,
                                            ArchiveStats stats) {
  return std::make_shared<ArchiveImpl>(std::move(paths), segments, stats);
}

}  // namespace detail

}  // namespace imagefs::cpio
