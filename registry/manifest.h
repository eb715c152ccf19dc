// Image manifests, indexes and configs (OCI image-spec and Docker schema 2) parsed from the bytes a
// registry serves. Parsing checks structure and types only; digests are checked by the caller.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/result.h"
#include "registry/platform.h"
#include "store/digest.h"

namespace imagefs::registry {

namespace media_type {
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerSchema1 =
    "application/vnd.docker.distribution.manifest.v1+json";
inline constexpr std::string_view kDockerSchema1Signed =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kOciLayer = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kDockerLayerGzip =
    "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kDockerForeignLayer =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
inline constexpr std::string_view kOciNondistributablePrefix =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";

// The Accept header for manifest requests: all four image types, always (distribution 2.8 answers
// 404 for an index tag when the OCI index type is missing).
std::string manifest_accept();
bool is_index(std::string_view type);     // OCI index or Docker manifest list
bool is_manifest(std::string_view type);  // OCI manifest or Docker schema 2
// A layer whose bytes the registry may not hold: fetched from the descriptor's urls.
bool is_foreign_layer(std::string_view type);
// A layer type imagefs can unpack: tar, tar+gzip, tar+zstd (OCI, Docker, foreign).
bool is_image_layer(std::string_view type);
}  // namespace media_type

struct Descriptor {
  std::string media_type;
  store::Digest digest;
  uint64_t size = 0;
  std::vector<std::string> urls;     // where a foreign layer may be fetched
  std::optional<Platform> platform;  // index entries; as written (not normalized)
};

struct ImageManifest {
  std::string media_type;  // kOciManifest or kDockerManifest
  Descriptor config;
  std::vector<Descriptor> layers;  // base layer first
};

struct ImageIndex {
  std::string media_type;  // kOciIndex or kDockerManifestList
  std::vector<Descriptor> manifests;
};

using ManifestDocument = std::variant<ImageManifest, ImageIndex>;

// The media type a served manifest has: from `content_type` (the Content-Type header; parameters
// ignored) and the document's own mediaType field, which must agree when both are known. When
// the header is generic (application/json, absent), the document decides. Schema 1 and unknown
// types are refused (EIO) with a message saying so.
Result<std::string> manifest_media_type(std::string_view bytes, std::string_view content_type);

// Parses an image manifest or index. EIO "malformed manifest: WHERE: WHAT" on any structural
// error (not JSON, wrong types, missing fields, invalid digests), or the media type's refusal.
Result<ManifestDocument> parse_manifest(std::string_view bytes, std::string_view content_type);

struct ImageConfig {
  Platform platform;                  // os/architecture/variant as written
  std::vector<std::string> diff_ids;  // rootfs.diff_ids, one per layer
};

// Parses the fields of an image config that pulling needs. EIO "malformed image config: ...".
Result<ImageConfig> parse_image_config(std::string_view bytes);

}  // namespace imagefs::registry
