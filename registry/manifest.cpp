// Manifest, index and config parsing with nlohmann/json: parse without exceptions, then check
// every field's type before touching it, so hostile documents give errors, not crashes.
#include "registry/manifest.h"

#include <cctype>
#include <nlohmann/json.hpp>

namespace imagefs::registry {

using nlohmann::json;

namespace media_type {

std::string manifest_accept() {
  return std::string(kOciIndex) + ", " + std::string(kOciManifest) + ", " +
         std::string(kDockerManifestList) + ", " + std::string(kDockerManifest);
}

bool is_index(std::string_view type) { return type == kOciIndex || type == kDockerManifestList; }
bool is_manifest(std::string_view type) { return type == kOciManifest || type == kDockerManifest; }
bool is_foreign_layer(std::string_view type) {
  return type == kDockerForeignLayer || type.starts_with(kOciNondistributablePrefix);
}
bool is_image_layer(std::string_view type) {
  if (type == kOciLayer || type == kOciLayerGzip || type == kOciLayerZstd ||
      type == kDockerLayerGzip || type == kDockerForeignLayer)
    return true;
  if (type.starts_with(kOciNondistributablePrefix)) {
    std::string_view rest = type.substr(kOciNondistributablePrefix.size());
    return rest.empty() || rest == "+gzip" || rest == "+zstd";
  }
  return false;
}

}  // namespace media_type

namespace {

Error malformed(const std::string& what, const std::string& why) {
  return make_error(EIO, "malformed " + what + ": " + why);
}

// "application/json; charset=utf-8" -> "application/json"
std::string bare_type(std::string_view content_type) {
  size_t semi = content_type.find(';');
  std::string_view t = content_type.substr(0, semi);
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
  while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
  std::string out(t);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_generic_type(std::string_view t) {
  return t.empty() || t == "application/json" || t == "text/plain" ||
         t == "application/octet-stream" || t == "binary/octet-stream";
}

bool is_schema1(std::string_view t) {
  return t == media_type::kDockerSchema1 || t == media_type::kDockerSchema1Signed;
}

Error schema1_refusal() {
  return make_error(EIO,
                    "the image has a Docker schema 1 manifest, which imagefs does not support "
                    "(deprecated since 2017); push it again with a current docker or skopeo to "
                    "get a schema 2 or OCI manifest");
}

bool is_known_manifest_type(std::string_view t) {
  return media_type::is_index(t) || media_type::is_manifest(t);
}

Result<json> parse_object(std::string_view bytes, const std::string& what) {
  json doc = json::parse(bytes.begin(), bytes.end(), nullptr, false);
  if (doc.is_discarded()) return malformed(what, "not valid JSON");
  if (!doc.is_object()) return malformed(what, "not a JSON object");
  return doc;
}

Result<Descriptor> parse_descriptor(const json& j, const std::string& where) {
  if (!j.is_object()) return malformed("manifest", where + ": not an object");
  auto mt = j.find("mediaType");
  if (mt == j.end() || !mt->is_string())
    return malformed("manifest", where + ".mediaType: missing or not a string");
  auto digest = j.find("digest");
  if (digest == j.end() || !digest->is_string())
    return malformed("manifest", where + ".digest: missing or not a string");
  Result<store::Digest> parsed = store::Digest::parse(digest->get<std::string>());
  if (!parsed.ok()) return malformed("manifest", where + ".digest: " + parsed.error().message);
  auto size = j.find("size");
  if (size == j.end() || !(size->is_number_unsigned() || size->is_number_integer()) ||
      (size->is_number_integer() && size->get<int64_t>() < 0))
    return malformed("manifest", where + ".size: missing or not a non-negative integer");
  Descriptor d{.media_type = mt->get<std::string>(),
               .digest = std::move(parsed).value(),
               .size = size->get<uint64_t>(),
               .urls = {},
               .platform = std::nullopt};
  if (auto urls = j.find("urls"); urls != j.end() && !urls->is_null()) {
    if (!urls->is_array()) return malformed("manifest", where + ".urls: not an array");
    for (const json& u : *urls) {
      if (!u.is_string()) return malformed("manifest", where + ".urls: not an array of strings");
      d.urls.push_back(u.get<std::string>());
    }
  }
  if (auto platform = j.find("platform"); platform != j.end() && !platform->is_null()) {
    if (!platform->is_object()) return malformed("manifest", where + ".platform: not an object");
    Platform p;
    for (auto [key, field] : {std::pair{"os", &p.os}, std::pair{"architecture", &p.architecture},
                              std::pair{"variant", &p.variant}}) {
      auto v = platform->find(key);
      if (v == platform->end() || v->is_null()) continue;
      if (!v->is_string())
        return malformed("manifest", where + ".platform." + key + ": not a string");
      *field = v->get<std::string>();
    }
    d.platform = std::move(p);
  }
  return d;
}

Result<void> check_schema_version(const json& doc) {
  auto v = doc.find("schemaVersion");
  if (v == doc.end() || !v->is_number_integer())
    return malformed("manifest", "schemaVersion: missing or not an integer");
  if (v->get<int64_t>() == 1) return schema1_refusal();
  if (v->get<int64_t>() != 2)
    return malformed("manifest",
                     "schemaVersion " + std::to_string(v->get<int64_t>()) + " (expected 2)");
  return {};
}

Result<std::string> media_type_of(const json& doc, std::string_view content_type) {
  std::string header = bare_type(content_type);
  std::string field;
  if (auto mt = doc.find("mediaType"); mt != doc.end()) {
    if (!mt->is_string()) return malformed("manifest", "mediaType: not a string");
    field = mt->get<std::string>();
  }
  if (is_schema1(header) || is_schema1(field)) return schema1_refusal();
  if (auto v = doc.find("schemaVersion");
      v != doc.end() && v->is_number_integer() && v->get<int64_t>() == 1)
    return schema1_refusal();
  if (!is_generic_type(header)) {
    if (!is_known_manifest_type(header))
      return make_error(EIO, "unsupported manifest media type \"" + header +
                                 "\" (imagefs reads OCI and Docker schema 2 images)");
    if (!field.empty() && field != header)
      return malformed("manifest",
                       "served as \"" + header + "\" but its mediaType says \"" + field + "\"");
    return header;
  }
  if (!field.empty()) {
    if (!is_known_manifest_type(field))
      return make_error(EIO, "unsupported manifest media type \"" + field +
                                 "\" (imagefs reads OCI and Docker schema 2 images)");
    return field;
  }
  // No type anywhere (allowed by OCI): decide by shape.
  if (doc.contains("manifests")) return std::string(media_type::kOciIndex);
  if (doc.contains("config") && doc.contains("layers"))
    return std::string(media_type::kOciManifest);
  return malformed("manifest", "no media type, and neither an index nor an image manifest");
}

}  // namespace

Result<std::string> manifest_media_type(std::string_view bytes, std::string_view content_type) {
  IMAGEFS_TRY(doc, parse_object(bytes, "manifest"));
  return media_type_of(doc, content_type);
}

Result<ManifestDocument> parse_manifest(std::string_view bytes, std::string_view content_type) {
  IMAGEFS_TRY(doc, parse_object(bytes, "manifest"));
  IMAGEFS_TRY(type, media_type_of(doc, content_type));
  IMAGEFS_CHECK(check_schema_version(doc));

  if (media_type::is_index(type)) {
    ImageIndex index{.media_type = type, .manifests = {}};
    auto manifests = doc.find("manifests");
    if (manifests == doc.end() || !manifests->is_array())
      return malformed("manifest", "manifests: missing or not an array");
    for (size_t i = 0; i < manifests->size(); ++i) {
      IMAGEFS_TRY(d, parse_descriptor((*manifests)[i], "manifests[" + std::to_string(i) + "]"));
      index.manifests.push_back(std::move(d));
    }
    return ManifestDocument(std::move(index));
  }

  auto config = doc.find("config");
  if (config == doc.end()) return malformed("manifest", "config: missing");
  IMAGEFS_TRY(config_descriptor, parse_descriptor(*config, "config"));
  ImageManifest manifest{.media_type = type, .config = std::move(config_descriptor), .layers = {}};
  auto layers = doc.find("layers");
  if (layers == doc.end() || !layers->is_array())
    return malformed("manifest", "layers: missing or not an array");
  for (size_t i = 0; i < layers->size(); ++i) {
    IMAGEFS_TRY(d, parse_descriptor((*layers)[i], "layers[" + std::to_string(i) + "]"));
    manifest.layers.push_back(std::move(d));
  }
  return ManifestDocument(std::move(manifest));
}

Result<ImageConfig> parse_image_config(std::string_view bytes) {
  IMAGEFS_TRY(doc, parse_object(bytes, "image config"));
  ImageConfig config;
  for (auto [key, field] : {std::pair{"os", &config.platform.os},
                            std::pair{"architecture", &config.platform.architecture},
                            std::pair{"variant", &config.platform.variant}}) {
    auto v = doc.find(key);
    if (v == doc.end() || v->is_null()) continue;
    if (!v->is_string()) return malformed("image config", std::string(key) + ": not a string");
    *field = v->get<std::string>();
  }
  if (auto rootfs = doc.find("rootfs"); rootfs != doc.end() && !rootfs->is_null()) {
    if (!rootfs->is_object()) return malformed("image config", "rootfs: not an object");
    if (auto ids = rootfs->find("diff_ids"); ids != rootfs->end() && !ids->is_null()) {
      if (!ids->is_array()) return malformed("image config", "rootfs.diff_ids: not an array");
      for (const json& id : *ids) {
        if (!id.is_string())
          return malformed("image config", "rootfs.diff_ids: not an array of strings");
        config.diff_ids.push_back(id.get<std::string>());
      }
    }
  }
  if (auto c = doc.find("config"); c != doc.end() && !c->is_null() && !c->is_object())
    return malformed("image config", "config: not an object");
  return config;
}

}  // namespace imagefs::registry
