// Internal to overlay/: a layer blob read as the byte stream of its tar, the way docker's and
// containerd's appliers read it. The compression comes from the blob's first bytes, whatever its
// media type says; decompression is strict (a gzip member's CRC-32 and length trailers, a zstd
// frame's checksum, nothing but members or frames up to the end of the blob); and two SHA-256
// hashes are computed on the way from bytes already in hand: of the blob (checked against its
// digest, so a store whose disk changed a byte is caught) and of the uncompressed stream (the
// layer's diff_id). docs/LAYER_FORMAT.md, "Reading a layer blob", has the rules and why.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"
#include "overlay/layer_index.h"
#include "store/catalog.h"
#include "store/digest.h"

namespace imagefs::overlay::detail {

enum class Compression : uint8_t { none = 0, gzip = 1, zstd = 2 };

// "uncompressed tar", "gzip", "zstd".
const char* compression_name(Compression c);

// What the blob's first bytes (up to 512) say it is: gzip (1f 8b), zstd (28 b5 2f fd, or a zstd
// skippable frame, 0x184D2A50-5F little-endian), else an uncompressed tar (an empty blob
// included). bzip2, xz and lz4 are recognised only to be refused: ENOTSUP naming `layer` and
// what the blob is; but a first block with tar's "ustar" magic at offset 257 is a tar whatever
// its first name (a directory called `BZh`).
Result<Compression> detect_compression(std::span<const uint8_t> head, const store::Digest& layer);

// The compression the media type names, or nullopt for a media type that names none we know.
std::optional<Compression> media_type_compression(std::string_view media_type);

// One pass over one blob. Not thread-safe; owned by one ingest.
class LayerStream {
 public:
  // Opens the blob and reads its first chunk. ENOENT when the blob is not in the store (naming
  // the layer), ENOTSUP for a compression layers may not use. When the media type of `layer`
  // names another compression than the bytes, `notice` (if any) gets one line saying so: the
  // bytes win, as in docker. The blob is hashed as it is read unless `store` says its writer
  // verified this very file a moment ago (BlobStore::verified_just_now).
  static Result<std::unique_ptr<LayerStream>> open(const std::filesystem::path& blob,
                                                   const store::LayerRecord& layer,
                                                   const IngestProgress* progress,
                                                   const store::BlobStore* store = nullptr);
  virtual ~LayerStream() = default;

  [[nodiscard]] virtual Compression compression() const = 0;

  // The next bytes of the uncompressed stream, valid until the next call; empty at its end.
  // Bytes decoded before an error come first, the error at the next call. Errors (EIO, naming the
  // layer and the byte of the blob where it went wrong): corrupt or truncated compressed data, a
  // wrong CRC-32 or length in a gzip trailer, a wrong zstd checksum, anything after the last gzip
  // member or zstd frame.
  virtual Result<std::span<const uint8_t>> read() = 0;

  // Whether the error read() gave is about bytes after the compressed stream (garbage after the
  // last member or frame), rather than about the stream itself.
  [[nodiscard]] virtual bool failed_after_the_stream() const = 0;

  // To be called once the consumer has what it needs: reads the rest of the stream (so that the
  // diff_id covers every byte, as docker's and umoci's do), then checks that the blob's bytes
  // hash to its digest. Returns the diff_id. EUCLEAN when the digest does not match: "blob
  // sha256:... in the store does not match its digest: the disk changed it".
  virtual Result<store::Digest> finish() = 0;

  // Given the error that stopped the consumer (or read()), returns the error to report: EUCLEAN
  // as finish() says if the blob does not match its digest (the rest of the blob is read and
  // hashed to know; a damaged store explains any error in what it holds), else `failure`.
  virtual Error explain(Error failure) = 0;
};

// The EUCLEAN error of a blob whose bytes do not hash to its digest.
Error rotten_blob(const store::Digest& blob, const store::Digest& actual);

}  // namespace imagefs::overlay::detail
