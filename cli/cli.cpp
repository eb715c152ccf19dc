// Command dispatch for `imagefs`. Commands land here as their modules are built.
#include "cli/cli.h"

#include <archive.h>
#include <curl/curl.h>
#include <libdeflate.h>
#include <lmdb.h>
#include <openssl/crypto.h>
#include <zlib.h>
#include <zstd.h>

#include <ostream>

#include "fs/version.h"

#ifndef IMAGEFS_VERSION
#define IMAGEFS_VERSION "unknown"
#endif

namespace imagefs::cli {
namespace {

constexpr const char* kUsage = R"(usage: imagefs COMMAND [ARGS...]

Presents container images as directories holding their merged root filesystem and bootable
initramfs archives.

Commands:
  version     print the versions of imagefs and the libraries it runs with
  help        print this text

Run `imagefs help` or see the README for what each command does.
)";

int version(std::ostream& out) {
  out << "imagefs " << IMAGEFS_VERSION << "\n";
  out << "  " << fs::fuse_version() << "\n";
  out << "  libcurl " << curl_version_info(CURLVERSION_NOW)->version << "\n";
  out << "  " << archive_version_string() << "\n";
  out << "  zlib " << zlibVersion() << "\n";
  out << "  libdeflate " << LIBDEFLATE_VERSION_STRING << "\n";
  out << "  zstd " << ZSTD_versionString() << "\n";
  out << "  " << mdb_version(nullptr, nullptr, nullptr) << "\n";
  out << "  " << OpenSSL_version(OPENSSL_VERSION) << "\n";
  return 0;
}

}  // namespace

int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.empty()) {
    err << kUsage;
    return 2;
  }
  const std::string& command = args[0];
  if (command == "help" || command == "--help" || command == "-h") {
    out << kUsage;
    return 0;
  }
  if (command == "version" || command == "--version") return version(out);
  err << "imagefs: unknown command \"" << command << "\"\n\n" << kUsage;
  return 2;
}

}  // namespace imagefs::cli
