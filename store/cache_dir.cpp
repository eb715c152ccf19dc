// The default cache directory, from the effective uid, the environment and the passwd entry;
// the store root's mode.
#include "store/cache_dir.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

#include "store/file_util.h"

namespace imagefs::store {

namespace {

bool usable(const std::optional<std::string>& dir) {
  return dir && !dir->empty() && (*dir)[0] == '/';
}

std::optional<std::string> env(const char* name) {
  // getenv is not thread-safe against setenv; imagefs never calls setenv.
  const char* value = std::getenv(name);  // NOLINT(concurrency-mt-unsafe)
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

std::optional<std::string> passwd_home(uid_t uid) {
  long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(hint > 0 ? static_cast<size_t>(hint) : 16384);
  struct passwd pw {};
  struct passwd* found = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr)
    return std::nullopt;
  return std::string(found->pw_dir);
}

}  // namespace

Result<std::filesystem::path> default_cache_dir(const CacheDirInputs& inputs) {
  if (inputs.euid == 0) return std::filesystem::path("/var/lib/imagefs");
  if (usable(inputs.xdg_cache_home))
    return std::filesystem::path(*inputs.xdg_cache_home) / "imagefs";
  if (usable(inputs.home)) return std::filesystem::path(*inputs.home) / ".cache" / "imagefs";
  return make_error(ENOENT,
                    "no default store directory: neither XDG_CACHE_HOME nor HOME is an absolute "
                    "path (give --cache-dir)");
}

Result<std::filesystem::path> default_cache_dir() {
  CacheDirInputs inputs;
  inputs.euid = ::geteuid();
  inputs.xdg_cache_home = env("XDG_CACHE_HOME");
  inputs.home = env("HOME");
  if (!usable(inputs.home)) inputs.home = passwd_home(inputs.euid);
  return default_cache_dir(inputs);
}

Result<void> make_private_store_dir(const std::filesystem::path& root) {
  IMAGEFS_CHECK(detail::make_dirs(root));
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0) return errno_error(errno, "cannot stat", root);
  if ((st.st_mode & 077) == 0) return {};
  // A symlinked root (~/.cache/imagefs -> /data/imagefs) is changed where it leads.
  if (::chmod(root.c_str(), 0700) != 0 && errno != EPERM)
    return errno_error(errno, "cannot make the store private (chmod 0700)", root);
  return {};
}

}  // namespace imagefs::store
