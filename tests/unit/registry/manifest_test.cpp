// Manifest, index and config parsing: the four image types, media-type decisions, refusals and
// malformed documents.
#include "registry/manifest.h"

#include <gtest/gtest.h>

namespace imagefs::registry {
namespace {

const std::string kA = "sha256:" + std::string(64, 'a');
const std::string kB = "sha256:" + std::string(64, 'b');

std::string oci_manifest(const std::string& extra_layer_fields = "") {
  return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
    "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
         kA + R"(","size":7},
    "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":")" +
         kB + R"(","size":1234)" + extra_layer_fields + "}]}";
}

TEST(Manifest, ParsesOciManifest) {
  Result<ManifestDocument> doc =
      parse_manifest(oci_manifest(), "application/vnd.oci.image.manifest.v1+json");
  ASSERT_TRUE(doc.ok()) << doc.error().message;
  const auto& m = std::get<ImageManifest>(doc.value());
  EXPECT_EQ(m.media_type, media_type::kOciManifest);
  EXPECT_EQ(m.config.digest.str(), kA);
  EXPECT_EQ(m.config.size, 7u);
  ASSERT_EQ(m.layers.size(), 1u);
  EXPECT_EQ(m.layers[0].media_type, media_type::kOciLayerGzip);
  EXPECT_EQ(m.layers[0].size, 1234u);
}

TEST(Manifest, ParsesDockerSchema2AndForeignUrls) {
  std::string doc = R"({"schemaVersion":2,
    "mediaType":"application/vnd.docker.distribution.manifest.v2+json",
    "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":")" +
                    kA + R"(","size":1},
    "layers":[{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
               "digest":")" +
                    kB + R"(","size":5,"urls":["https://mcr.example/layer"]}]})";
  auto parsed = parse_manifest(doc, "application/vnd.docker.distribution.manifest.v2+json");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  const auto& m = std::get<ImageManifest>(parsed.value());
  EXPECT_TRUE(media_type::is_foreign_layer(m.layers[0].media_type));
  ASSERT_EQ(m.layers[0].urls.size(), 1u);
  EXPECT_EQ(m.layers[0].urls[0], "https://mcr.example/layer");
}

TEST(Manifest, ParsesIndexAndManifestList) {
  for (const char* type : {"application/vnd.oci.image.index.v1+json",
                           "application/vnd.docker.distribution.manifest.list.v2+json"}) {
    std::string doc =
        std::string(R"({"schemaVersion":2,"mediaType":")") + type +
        R"(","manifests":[
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
        kA + R"(","size":10,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
      {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
        kB + R"(","size":11}]})";
    auto parsed = parse_manifest(doc, type);
    ASSERT_TRUE(parsed.ok()) << parsed.error().message;
    const auto& index = std::get<ImageIndex>(parsed.value());
    EXPECT_EQ(index.media_type, type);
    ASSERT_EQ(index.manifests.size(), 2u);
    ASSERT_TRUE(index.manifests[0].platform.has_value());
    EXPECT_EQ(index.manifests[0].platform->str(), "linux/arm64/v8");
    EXPECT_FALSE(index.manifests[1].platform.has_value());
  }
}

TEST(Manifest, MediaTypeFromDocumentWhenHeaderIsGeneric) {
  EXPECT_EQ(manifest_media_type(oci_manifest(), "application/json; charset=utf-8").value(),
            media_type::kOciManifest);
  EXPECT_EQ(manifest_media_type(oci_manifest(), "").value(), media_type::kOciManifest);
  // No type anywhere: decided by shape.
  std::string untyped = R"({"schemaVersion":2,"manifests":[]})";
  EXPECT_EQ(manifest_media_type(untyped, "").value(), media_type::kOciIndex);
}

TEST(Manifest, HeaderAndDocumentMustAgree) {
  auto r = parse_manifest(oci_manifest(), "application/vnd.oci.image.index.v1+json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("mediaType says"), std::string::npos) << r.error().message;
}

TEST(Manifest, Schema1IsRefusedClearly) {
  std::string v1 = R"({"schemaVersion":1,"name":"app","tag":"1","fsLayers":[]})";
  for (const char* type : {"application/vnd.docker.distribution.manifest.v1+prettyjws",
                           "application/vnd.docker.distribution.manifest.v1+json", ""}) {
    auto r = parse_manifest(v1, type);
    ASSERT_FALSE(r.ok()) << type;
    EXPECT_EQ(r.error().code, EIO);
    EXPECT_NE(r.error().message.find("schema 1"), std::string::npos) << r.error().message;
  }
}

TEST(Manifest, UnknownTypesAreRefused) {
  auto r = parse_manifest(oci_manifest(), "application/vnd.cncf.helm.chart.v1+json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("unsupported manifest media type"), std::string::npos);
}

TEST(Manifest, MalformedDocuments) {
  struct Case {
    std::string doc;
    const char* says;
  };
  const std::string t = "application/vnd.oci.image.manifest.v1+json";
  for (const Case& c : {
           Case{"{", "not valid JSON"},
           Case{"[]", "not a JSON object"},
           Case{R"({"mediaType":")" + t + R"("})", "schemaVersion"},
           Case{R"({"schemaVersion":3,"mediaType":")" + t + R"("})", "schemaVersion 3"},
           Case{R"({"schemaVersion":2,"mediaType":")" + t + R"(","layers":[]})", "config: missing"},
           Case{R"({"schemaVersion":2,"mediaType":")" + t +
                    R"(","config":{"mediaType":"x","digest":"md5:00","size":1},"layers":[]})",
                "config.digest"},
           Case{R"({"schemaVersion":2,"mediaType":")" + t +
                    R"(","config":{"mediaType":"x","digest":")" + kA +
                    R"(","size":-1},"layers":[]})",
                "config.size"},
           Case{R"({"schemaVersion":2,"mediaType":")" + t +
                    R"(","config":{"mediaType":"x","digest":")" + kA +
                    R"(","size":1},"layers":{}})",
                "layers: missing or not an array"},
           Case{R"({"schemaVersion":2,"mediaType":")" + t +
                    R"(","config":{"mediaType":"x","digest":")" + kA +
                    R"(","size":1},"layers":[{"mediaType":1}]})",
                "layers[0].mediaType"},
           Case{oci_manifest(R"(,"urls":"https://x")"), "layers[0].urls"},
           Case{R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
                    "manifests":[{"mediaType":"m","digest":")" +
                    kA + R"(","size":1,"platform":{"os":7}}]})",
                "manifests[0].platform.os"},
       }) {
    auto r = parse_manifest(c.doc, "");
    ASSERT_FALSE(r.ok()) << c.doc;
    EXPECT_EQ(r.error().code, EIO);
    EXPECT_NE(r.error().message.find(c.says), std::string::npos)
        << "expected \"" << c.says << "\" in: " << r.error().message;
  }
}

TEST(ImageConfig, ParsesPlatformAndDiffIds) {
  auto c = parse_image_config(
      R"({"architecture":"arm64","os":"linux","variant":"v8","rootfs":{"type":"layers","diff_ids":[")" +
      kA + R"("]},"config":{"Cmd":["/bin/sh"]}})");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->platform.str(), "linux/arm64/v8");
  EXPECT_EQ(c->diff_ids.size(), 1u);
}

TEST(ImageConfig, Malformed) {
  EXPECT_FALSE(parse_image_config("nope").ok());
  EXPECT_FALSE(parse_image_config(R"({"architecture":5})").ok());
  EXPECT_FALSE(parse_image_config(R"({"rootfs":{"diff_ids":"x"}})").ok());
  EXPECT_FALSE(parse_image_config(R"({"config":[]})").ok());
  auto r = parse_image_config("[1]");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "malformed image config: not a JSON object");
}

TEST(MediaTypes, Layers) {
  EXPECT_TRUE(media_type::is_image_layer(media_type::kOciLayer));
  EXPECT_TRUE(media_type::is_image_layer(media_type::kOciLayerZstd));
  EXPECT_TRUE(media_type::is_image_layer(media_type::kDockerLayerGzip));
  EXPECT_TRUE(
      media_type::is_image_layer("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"));
  EXPECT_TRUE(
      media_type::is_foreign_layer("application/vnd.oci.image.layer.nondistributable.v1.tar"));
  EXPECT_FALSE(media_type::is_foreign_layer(media_type::kOciLayerGzip));
  EXPECT_FALSE(media_type::is_image_layer("application/vnd.cncf.helm.chart.content.v1.tar+gzip"));
  EXPECT_NE(media_type::manifest_accept().find(media_type::kOciIndex), std::string::npos);
  EXPECT_NE(media_type::manifest_accept().find(media_type::kDockerManifestList), std::string::npos);
}

}  // namespace
}  // namespace imagefs::registry
