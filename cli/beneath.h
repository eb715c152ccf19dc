// Writing files beneath one directory without following a symlink that anyone else could plant:
// what `imagefs export` needs so that another local user cannot redirect a file, a chown or a
// chmod onto the host (issue 12). Every operation goes through directory descriptors opened one
// component at a time with O_NOFOLLOW (or openat2's RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS where the
// kernel has it), never through a path from the top.
//
// Not thread-safe: one writer per object. Errors name the path (relative to the root's own path)
// and say what was found there.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace imagefs::cli {

// "a/b/c" -> {"a/b", "c"}; "c" -> {"", "c"}.
std::pair<std::string_view, std::string_view> split_parent(std::string_view rel);

// Opens the directory at `rel` ("" is `root` itself, else components joined by '/', none of them
// empty, "." or "..") beneath the directory `root`, following no symlink on the way: ELOOP (or
// ENOTDIR) when a component is a symlink or not a directory. Read-only, close-on-exec. `shown` is
// how the error names the root.
Result<UniqueFd> open_dir_beneath(int root, std::string_view rel,
                                  const std::filesystem::path& shown);

// Descriptors of the directories of one path at a time, from a root: the writer of a walk in
// directory order asks for each entry's parent, and only the components that differ from the
// previous parent's are opened (each with O_NOFOLLOW relative to the one above it). A directory
// once opened stays the one written into even if it is renamed meanwhile. Holds at most one
// descriptor per level of the deepest path.
class DirChain {
 public:
  DirChain(int root, std::filesystem::path shown) : root_(root), shown_(std::move(shown)) {}
  // The descriptor of directory `rel` beneath the root (owned by the chain: valid until the next
  // call or reset()).
  Result<int> dir(std::string_view rel);
  void reset();

 private:
  int root_;
  std::filesystem::path shown_;
  std::vector<std::string> names_;  // the components open now
  std::vector<UniqueFd> fds_;       // fds_[i] is the directory names_[0..i]
};

// The directory an export writes into, opened as the export's root: created mode 0700 (missing
// parents as `mkdir -p` makes them: the path up to DIR's parent is the caller's own), or an
// existing empty directory of this user, then made 0700. Refused: a symlink at DIR (another user
// who may write to DIR's parent could plant it), something not a directory, a directory of
// another user, a directory that is not empty (its mode is put back).
struct ExportRoot {
  UniqueFd fd;
  bool created = false;  // made here, rather than an existing empty directory
};
Result<ExportRoot> open_export_root(const std::filesystem::path& dir);

// A temporary file beside `file`, for a result renamed over it once complete: created in the same
// directory with O_CREAT | O_EXCL | O_NOFOLLOW (never through a name someone planted, symlink or
// not) and mode 0600, named FILE.tmp, or FILE.tmp.<random> when that name is taken. Removed on
// destruction unless committed.
class TempFile {
 public:
  static Result<TempFile> create(const std::filesystem::path& file);
  TempFile(TempFile&&) noexcept = default;
  TempFile& operator=(TempFile&&) noexcept = delete;
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile();

  [[nodiscard]] int fd() const { return fd_.get(); }
  [[nodiscard]] std::filesystem::path path() const { return file_.parent_path() / name_; }
  // fsync, the mode a new file gets from the umask (0666 less it), then renamed over `file`
  // (which, if it is a symlink, is replaced, not followed).
  Result<void> commit();

 private:
  TempFile(std::filesystem::path file, UniqueFd dir, std::string name, UniqueFd fd)
      : file_(std::move(file)), dir_(std::move(dir)), name_(std::move(name)), fd_(std::move(fd)) {}
  std::filesystem::path file_;
  UniqueFd dir_;  // file_'s directory
  std::string name_;
  UniqueFd fd_;
  bool committed_ = false;
};

// The process's umask, read without changing it (/proc/self/status; 022 if unknown).
mode_t current_umask();

}  // namespace imagefs::cli
