// Internal to cpio/ (not part of its interface): one segment of an archive, as the plan describes
// it (a run of whole cpio entries: literal bytes and references to file contents), its cache key,
// and how it is compressed and kept under ROOT/segments/ (docs/STORE_FORMAT.md, "Archive
// segments").
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "cpio/archive.h"
#include "overlay/layer_index.h"
#include "store/digest.h"

namespace imagefs::cpio::detail {

// The name of a format in segment paths, keys and plan keys: "gzip", "zstd", "none".
std::string_view format_dir(Format format);

// Bytes of a host file read once at planning time (/init, an injected file), so that what is
// hashed into the segment key is exactly what is compressed.
struct HostFile {
  std::string guest;  // "/usr/bin/agent", for messages
  std::string bytes;
  store::Digest digest;   // of `bytes`
  int64_t mtime_sec = 0;  // the host file's, which the cpio entry carries
  uint32_t mode = 0755;   // permission bits of the entry (root:root)
};

// A piece of a segment's raw (uncompressed) bytes, in order.
struct Piece {
  enum class Kind : uint8_t { bytes, layer_content, host_file };
  Kind kind = Kind::bytes;
  std::string bytes;  // Kind::bytes: headers, names, padding, targets
  std::shared_ptr<const overlay::LayerIndex> layer;  // Kind::layer_content
  size_t entry = 0;                                  // index in `layer`
  std::shared_ptr<const HostFile> host;              // Kind::host_file
  uint64_t size = 0;                                 // bytes this piece contributes
};

// A run of whole cpio entries (header, name, padding, data, padding), compressed on its own.
struct SegmentSpec {
  std::vector<Piece> pieces;
  uint64_t raw_size = 0;
  std::string first_name;  // the first entry's name, for messages
  // SHA-256 of the format, the level and every piece's identity (docs/STORE_FORMAT.md): two
  // segments with one key have the same compressed bytes.
  std::string key;  // 64 lowercase hex
};

// Fills `spec.key` for `format` at `level` (the level that applies to the format; 0 for none).
void compute_key(SegmentSpec& spec, Format format, int level);

// ROOT/segments/<gzip|zstd|none>/<key>: a shared derived file of the store (store/derived.h).
std::filesystem::path segment_path(const std::filesystem::path& store_root, Format format,
                                   std::string_view key);

enum class Built { now, already };

// Makes the segment file unless it exists: the raw bytes are gathered from the pieces, compressed
// as one gzip member, one zstd frame or left raw, and written by store::build_shared() (under a
// lock, fsynced, renamed into place). Another thread or process building the same segment is
// waited for. Errors name the segment's first entry and the path.
Result<Built> build_segment(const std::filesystem::path& store_root, Format format, int level,
                            const SegmentSpec& spec);

// Whether deflating `raw` would gain next to nothing (data compressed already, random bytes), so
// that its gzip member is written as stored blocks (segment.cpp says how this is decided; it
// depends only on the bytes). `scratch` has at least ZSTD_compressBound(raw.size()) bytes.
bool looks_incompressible(std::span<const uint8_t> raw, std::span<uint8_t> scratch);

// Segments larger than this (64 MiB) are compressed streaming, in bounded memory; tests lower it
// to exercise that path without huge files (0 restores the default). The store must then be the
// test's own: the same key would get other bytes.
void set_whole_buffer_limit_for_tests(uint64_t bytes);

}  // namespace imagefs::cpio::detail
