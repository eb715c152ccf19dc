// Tiny layer tars for tests, written by libarchive's own writer (PAX, optionally gzip or zstd),
// so that the ingest is tested against a real tar implementation rather than our own idea of one.
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace imagefs::overlay::testing {

enum class Filter { none, gzip, zstd };

inline constexpr const char* kTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr const char* kTarGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr const char* kTarZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr const char* kDockerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";

struct TarEntry {
  std::string name;
  unsigned type = AE_IFREG;
  unsigned perm = 0644;
  std::string data;      // regular files: the content (for sparse ones, holes included)
  std::string symlink;   // symlinks: the target
  std::string hardlink;  // hardlinks: the target's name
  int64_t uid = 0;
  int64_t gid = 0;
  int64_t mtime = 1700000000;
  long mtime_nsec = 0;
  unsigned rdev_major = 0;
  unsigned rdev_minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;
  std::vector<std::pair<int64_t, int64_t>> sparse;  // data regions (offset, length), if sparse
};

inline TarEntry File(std::string name, std::string data, unsigned perm = 0644) {
  TarEntry e;
  e.name = std::move(name);
  e.data = std::move(data);
  e.perm = perm;
  return e;
}
inline TarEntry Dir(std::string name, unsigned perm = 0755) {
  TarEntry e;
  e.name = std::move(name);
  e.type = AE_IFDIR;
  e.perm = perm;
  return e;
}
inline TarEntry Symlink(std::string name, std::string target) {
  TarEntry e;
  e.name = std::move(name);
  e.type = AE_IFLNK;
  e.perm = 0777;
  e.symlink = std::move(target);
  return e;
}
inline TarEntry Hardlink(std::string name, std::string target) {
  TarEntry e;
  e.name = std::move(name);
  e.hardlink = std::move(target);
  return e;
}
inline TarEntry Device(std::string name, unsigned type, unsigned major, unsigned minor) {
  TarEntry e;
  e.name = std::move(name);
  e.type = type;
  e.perm = 0600;
  e.rdev_major = major;
  e.rdev_minor = minor;
  return e;
}

// The tar (compressed as asked) holding `entries` in order.
inline std::string make_tar(const std::vector<TarEntry>& entries, Filter filter = Filter::none) {
  struct Free {
    void operator()(archive* a) const { archive_write_free(a); }
  };
  std::unique_ptr<archive, Free> a(archive_write_new());
  archive_write_set_format_pax(a.get());
  if (filter == Filter::gzip) archive_write_add_filter_gzip(a.get());
  if (filter == Filter::zstd) archive_write_add_filter_zstd(a.get());
  archive_write_set_bytes_in_last_block(a.get(), 1);  // no padding to 10 KiB
  std::string out;
  auto write = [](archive*, void* client, const void* buf, size_t n) -> la_ssize_t {
    static_cast<std::string*>(client)->append(static_cast<const char*>(buf), n);
    return static_cast<la_ssize_t>(n);
  };
  if (archive_write_open(a.get(), &out, nullptr, write, nullptr) != ARCHIVE_OK) std::abort();
  for (const TarEntry& t : entries) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, t.name.c_str());
    archive_entry_set_uid(e, t.uid);
    archive_entry_set_gid(e, t.gid);
    archive_entry_set_mtime(e, t.mtime, t.mtime_nsec);
    for (const auto& [name, value] : t.xattrs)
      archive_entry_xattr_add_entry(e, name.c_str(), value.data(), value.size());
    if (!t.hardlink.empty()) {
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_perm(e, t.perm);
      archive_entry_set_hardlink(e, t.hardlink.c_str());
      archive_entry_set_size(e, 0);
    } else {
      archive_entry_set_filetype(e, t.type);
      archive_entry_set_perm(e, t.perm);
      if (t.type == AE_IFLNK) archive_entry_set_symlink(e, t.symlink.c_str());
      if (t.type == AE_IFCHR || t.type == AE_IFBLK) {
        archive_entry_set_rdevmajor(e, t.rdev_major);
        archive_entry_set_rdevminor(e, t.rdev_minor);
      }
      archive_entry_set_size(e, t.type == AE_IFREG ? static_cast<la_int64_t>(t.data.size()) : 0);
      for (const auto& [offset, length] : t.sparse)
        archive_entry_sparse_add_entry(e, offset, length);
    }
    if (archive_write_header(a.get(), e) < ARCHIVE_WARN) std::abort();
    if (t.type == AE_IFREG && t.hardlink.empty() && !t.data.empty() &&
        archive_write_data(a.get(), t.data.data(), t.data.size()) < 0)
      std::abort();
    archive_entry_free(e);
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK) std::abort();
  return out;
}

}  // namespace imagefs::overlay::testing
