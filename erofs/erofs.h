// rootfs.erofs: an image's merged tree as an EROFS file system image (uncompressed, 4 KiB blocks,
// readable by Linux 5.4 and later; docs/EROFS_FORMAT.md), with what the initramfs archives hold
// for booting: the default init at /.imagefs/init with its config /.imagefs/init.conf (or the
// --init file there), and --inject'ed files. The image is never written out: its layout (the
// metadata bytes and a map of which image ranges are which layer data file's bytes) is computed
// once from the tree and kept in the store as a shared derived file (docs/STORE_FORMAT.md, "EROFS
// layouts"), so the exact size is known without reading file data, and a read at any offset is
// metadata bytes or a pread of one layer data file.
#pragma once

#include <filesystem>
#include <memory>
#include <set>
#include <string_view>

#include "common/result.h"
#include "cpio/archive.h"
#include "store/blob_store.h"
#include "store/digest.h"
#include "store/usage.h"

namespace imagefs::erofs {

// The file's name in an image directory.
inline constexpr std::string_view kFileName = "rootfs.erofs";

// Makes EROFS images, keeping their layouts in the store. Thread-safe, and safe across processes
// (a layout file is replaced whole, by rename). The images it returns are cpio::Archive objects
// (size, read, write_to), the read interface every image file of a mount shares: immutable, read
// from any number of threads.
class ImageMaker {
 public:
  static Result<std::shared_ptr<ImageMaker>> create(std::shared_ptr<store::BlobStore> blobs);
  virtual ~ImageMaker() = default;

  // The image of `source` with `options`' --init, --exec and --inject (format and levels are not
  // used): the cached layout when the image and options (injected files' identity included) are
  // unchanged and every layer data file it reads is in the store; otherwise `open_tree` is called
  // (once) and the layout computed and stored. Errors: EINVAL for --exec with --init or empty, an
  // xattr EROFS cannot hold; EIO for a config the default init cannot use (naming the image);
  // ENOENT for a missing host file; errors of the tree and the store.
  virtual Result<std::shared_ptr<const cpio::Archive>> make(
      const cpio::ImageSource& source, const cpio::ArchiveMaker::TreeOpener& open_tree,
      const cpio::ArchiveOptions& options) = 0;

  // The image when its layout is cached and its layers' data files are in the store; nullptr
  // otherwise (no tree is opened). Errors as make()'s for the options.
  virtual Result<std::shared_ptr<const cpio::Archive>> cached(
      const store::Digest& manifest, const cpio::ArchiveOptions& options) = 0;
};

// For gc (store::collect): the layout files of images someone holds an image lease on.
Result<std::set<std::filesystem::path>> shared_files_in_use(
    const std::filesystem::path& store_root);
// For gc, rm and usage: each image's layout files, whether or not anyone holds the image.
Result<store::SharedUse> shared_files_by_image(const std::filesystem::path& store_root);

}  // namespace imagefs::erofs
