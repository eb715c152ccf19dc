// Internal to overlay/ (not part of its interface): the on-disk layout of an ingested layer (its
// index and data files, byte by byte in docs/LAYER_FORMAT.md), the ingest that writes them and
// the reader that maps them. LayerCache (layer_index.h) is how the rest of imagefs gets at them.
#pragma once

#include <unistd.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include "common/errno_error.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "overlay/layer_index.h"
#include "store/catalog.h"
#include "store/digest.h"

namespace imagefs::overlay::detail {

// The product name under ROOT/derived/<layer hex>/ (store/derived.h), and its two files.
inline constexpr std::string_view kProductName = "layer";
inline constexpr std::string_view kIndexFile = "index";
inline constexpr std::string_view kDataFile = "data";

// The index file: a header, the root record, the entry records, the xattr records, the strings.
inline constexpr char kMagic[8] = {'I', 'F', 'S', 'L', 'A', 'Y', 'E', 'R'};
// Version 2 added the diff_id and the compression to the header, followed same-layer symlinks
// and made whiteouts make no parents (issues 12, 17); a version 1 index is rebuilt.
inline constexpr uint32_t kVersion = 2;
inline constexpr size_t kHeaderSize = 96;
inline constexpr size_t kRecordSize = 96;
inline constexpr size_t kXattrRecordSize = 24;
inline constexpr size_t kRootOffset = kHeaderSize;                   // the root record
inline constexpr size_t kEntriesOffset = kHeaderSize + kRecordSize;  // the first entry record
inline constexpr uint32_t kHeaderFlagRoot = 1;                       // the root record is in use
inline constexpr uint8_t kRecordFlagImplicit = 1;
inline constexpr uint8_t kRecordFlagOpaque = 2;

// Header fields (byte offsets).
inline constexpr size_t kHdrMagic = 0, kHdrVersion = 8, kHdrFlags = 12, kHdrEntryCount = 16,
                        kHdrXattrCount = 24, kHdrStringsSize = 32, kHdrDataSize = 40,
                        kHdrDiffId = 48, kHdrCompression = 80;
inline constexpr size_t kDiffIdSize = 32;  // a SHA-256, raw
// Record fields (byte offsets within a record).
inline constexpr size_t kRecPathOff = 0, kRecPathLen = 8, kRecNameOff = 12, kRecLinkOff = 16,
                        kRecLinkLen = 24, kRecType = 28, kRecFlags = 29, kRecMode = 32,
                        kRecUid = 36, kRecGid = 40, kRecMtimeNsec = 44, kRecMtimeSec = 48,
                        kRecSize = 56, kRecDataOff = 64, kRecRdevMajor = 72, kRecRdevMinor = 76,
                        kRecHardlink = 80, kRecXattrCount = 84, kRecXattrFirst = 88;
// Xattr record fields.
inline constexpr size_t kXaNameOff = 0, kXaNameLen = 8, kXaValueLen = 12, kXaValueOff = 16;

// Little-endian field access. memcpy, not casts: the mapping's alignment is not the compiler's
// business, and a damaged file must not become undefined behaviour. Every host imagefs targets
// (amd64, arm64) is little-endian, so no byte swapping is needed.
static_assert(std::endian::native == std::endian::little, "the layer format is little-endian");
template <typename T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
void store_le(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

// The diff_id as the header keeps it: the 32 bytes of the SHA-256 (a Digest is always one).
inline Result<void> store_diff_id(uint8_t* p, const store::Digest& diff_id) {
  std::string_view hex = diff_id.hex();
  if (hex.size() != 2 * kDiffIdSize) return make_error(EINVAL, "not a SHA-256: " + diff_id.str());
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (size_t i = 0; i < kDiffIdSize; ++i)
    p[i] = static_cast<uint8_t>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  return {};
}
inline store::Digest load_diff_id(const uint8_t* p) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text = "sha256:";
  for (size_t i = 0; i < kDiffIdSize; ++i) {
    text += kHex[p[i] >> 4];
    text += kHex[p[i] & 15];
  }
  return store::Digest::parse(text).value();  // 64 lowercase hex digits always parse
}

using imagefs::UniqueFd;

// common/errno_error.h's, under the names this module's files already use.
using imagefs::errno_error;
using imagefs::errno_text;

// Streams the layer blob at `blob` once (media type, digest and size from `layer`) and writes the
// index and data files into `dir` (which exists and is empty), fsynced. Errors name the layer and,
// for bad tar input, the entry. The blob's bytes are hashed as they are read (EUCLEAN if they do
// not match its digest) unless `store` says its writer verified that very file a moment ago.
Result<void> ingest_layer(const std::filesystem::path& blob, const store::LayerRecord& layer,
                          const std::filesystem::path& dir, const IngestProgress* progress,
                          const IngestLimits& limits = {}, const store::BlobStore* store = nullptr);

// Opens the ingested layer in `dir`, checking the whole index (magic, version, the bounds of every
// offset and length, the order of the entries) and the data file's size. ENOENT when there is no
// index file, ENOTSUP for an index written by a newer imagefs, EIO (naming the layer and what is
// wrong) for a damaged one.
Result<std::shared_ptr<const LayerIndex>> open_layer_index(const std::filesystem::path& dir,
                                                           const store::Digest& layer);

}  // namespace imagefs::overlay::detail
