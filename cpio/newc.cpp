// Encoding of newc cpio headers.
#include "cpio/newc.h"

namespace imagefs::cpio {
namespace {

// Eight uppercase hex digits, as GNU cpio writes them (the kernel accepts either case).
void append_hex8(std::string& out, uint64_t value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (int shift = 28; shift >= 0; shift -= 4) out += kHex[(value >> shift) & 0xf];
}

}  // namespace

Result<void> append_newc_header(std::string& out, const NewcHeader& h, std::string_view name) {
  if (name.empty() || name.find('\0') != std::string_view::npos)
    return make_error(EINVAL, "cpio entry name is empty or contains NUL");
  if (h.filesize > kNewcMaxFileSize)
    return make_error(EFBIG,
                      "/" + std::string(name) + " is " + std::to_string(h.filesize) +
                          " bytes: an initramfs (newc cpio) cannot hold files of 4 GiB or more");
  size_t start = out.size();
  out += "070701";
  append_hex8(out, h.ino);
  append_hex8(out, h.mode);
  append_hex8(out, h.uid);
  append_hex8(out, h.gid);
  append_hex8(out, h.nlink);
  append_hex8(out, h.mtime);
  append_hex8(out, h.filesize);
  append_hex8(out, h.devmajor);
  append_hex8(out, h.devminor);
  append_hex8(out, h.rdevmajor);
  append_hex8(out, h.rdevminor);
  append_hex8(out, name.size() + 1);  // namesize counts the NUL
  append_hex8(out, 0);                // check: only used by the "070702" crc format
  out += name;
  out += '\0';
  out.append(newc_pad(out.size() - start), '\0');
  return {};
}

void append_newc_trailer(std::string& out) {
  NewcHeader h;
  h.nlink = 1;
  (void)append_newc_header(out, h, kTrailerName);  // a constant valid name cannot fail
}

}  // namespace imagefs::cpio
