// The newc ("070701") cpio format, as the kernel's init/initramfs.c reads it: 110-byte ASCII hex
// header, NUL-terminated name padded to 4 bytes, data padded to 4 bytes, "TRAILER!!!" at the end.
// Pure encoding: no I/O, no knowledge of where entries come from.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace imagefs::cpio {

inline constexpr size_t kNewcHeaderSize = 110;
inline constexpr uint64_t kNewcMaxFileSize = 0xffffffffULL;  // 32-bit size field
inline constexpr std::string_view kTrailerName = "TRAILER!!!";

struct NewcHeader {
  uint32_t ino = 0;
  uint32_t mode = 0;  // file type bits and permissions, as st_mode
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 1;
  uint32_t mtime = 0;
  uint64_t filesize = 0;  // must be <= kNewcMaxFileSize; 0 for directories and devices
  uint32_t devmajor = 0;
  uint32_t devminor = 0;
  uint32_t rdevmajor = 0;
  uint32_t rdevminor = 0;
};

// Bytes needed to pad `n` up to a multiple of 4.
constexpr uint64_t newc_pad(uint64_t n) { return (4 - n % 4) % 4; }

// Size of a whole entry: header, name + NUL + padding, data + padding.
constexpr uint64_t newc_entry_size(size_t name_size, uint64_t filesize) {
  uint64_t head = kNewcHeaderSize + name_size + 1;
  return head + newc_pad(head) + filesize + newc_pad(filesize);
}

// Appends header and padded name to `out`. The caller appends `filesize` bytes of data, then
// newc_pad(filesize) zero bytes. Fails (EFBIG) for a file of 4 GiB or more, naming it, and
// (EINVAL) for an empty name or one containing NUL.
Result<void> append_newc_header(std::string& out, const NewcHeader& header, std::string_view name);

// Appends the "TRAILER!!!" entry that ends an archive.
void append_newc_trailer(std::string& out);

}  // namespace imagefs::cpio
