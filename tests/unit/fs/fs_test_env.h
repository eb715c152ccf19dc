// A store filled the way `imagefs pull` fills it, for fs/'s tests: tiny layers built with
// libarchive, served by registry/'s FakeRegistry and pulled into a real BlobStore and Catalog by
// the real Puller (through its Http and Clock seams), with the fake clock set to the real time so
// that the catalog's resolved_at is fresh. Images itself has no Http seam: within the tag TTL (and
// for digest references whose blobs are stored) it needs no network, which is what these tests
// rely on. Then a real Images and Filesystem over that store.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "cpio/archive.h"
#include "fs/filesystem.h"
#include "fs/images.h"
#include "overlay/layer_index.h"
#include "overlay/tree.h"
#include "registry/puller.h"
#include "store/blob_store.h"
#include "store/catalog.h"
#include "tests/unit/overlay/tar_builder.h"
#include "tests/unit/registry/fakes.h"
#include "tests/unit/store/store_test_util.h"

namespace imagefs::fs::testing {

using overlay::testing::Dir;
using overlay::testing::File;
using overlay::testing::Filter;
using overlay::testing::Hardlink;
using overlay::testing::make_tar;
using overlay::testing::Symlink;
using overlay::testing::TarEntry;
using registry::testing::TestImage;

inline const registry::Platform kAmd64{"linux", "amd64", ""};
inline const registry::Platform kArm64{"linux", "arm64", "v8"};
// fs/filesystem.cpp's kForever: what the kernel may keep for the life of the mount.
inline constexpr double kForever = 365.0 * 24 * 3600;
inline constexpr std::chrono::seconds kTtl{3600};

// Bytes that differ with `seed` (the store tests' pattern).
inline std::string bytes_of(size_t size, uint32_t seed) {
  return store::testing::pattern(size, seed);
}

inline TarEntry with_xattr(TarEntry e, std::string name, std::string value) {
  e.xattrs.emplace_back(std::move(name), std::move(value));
  return e;
}

// A sparse file of 300000 bytes: data at 0 and at 200000, holes elsewhere.
inline std::string sparse_content() {
  std::string data(300000, '\0');
  data.replace(0, 1000, bytes_of(1000, 3));
  data.replace(200000, 3000, bytes_of(3000, 4));
  return data;
}
inline TarEntry sparse_file(std::string name) {
  TarEntry e = File(std::move(name), sparse_content());
  e.sparse = {{0, 1000}, {200000, 3000}};
  return e;
}

// The test image "python": a base layer with every kind of entry the fs serves, and a layer on
// top that adds a file, a hardlink to a file of the base layer, and deletes one (a whiteout).
inline std::vector<std::string> python_layers(const std::string& flavour = "amd64") {
  std::string base =
      make_tar({Dir("etc"), File("etc/os-release", "NAME=imagefs-test\nARCH=" + flavour + "\n"),
                File("etc/motd", "deleted above\n"), Dir("bin"),
                File("bin/busybox", bytes_of(200000, 7), 0755), Symlink("bin/sh", "busybox"),
                Hardlink("bin/ls", "bin/busybox"), Dir("usr"), Dir("usr/share"),
                with_xattr(File("usr/share/note.txt", "noted\n"), "user.note", "hi there"),
                Dir("var"), sparse_file("var/sparse")},
               Filter::gzip);
  std::string top = make_tar({Dir("app"), File("app/main.py", "print('hi')\n"),
                              Hardlink("app/bb", "bin/busybox"), File("etc/.wh.motd", "")},
                             Filter::gzip);
  return {base, top};
}

struct Mounted {
  std::shared_ptr<Images> images;
  std::unique_ptr<Filesystem> fs;
};

class FsEnv : public ::testing::Test {
 protected:
  void SetUp() override {
    // The fake clock reads the real time: what the puller records is fresh for Images.
    clock->advance(std::chrono::seconds(std::time(nullptr) - clock->unix_now()));
    store_root = temp.path() / "store";
    blobs = store::BlobStore::open(store_root).value();
    catalog = store::Catalog::open(store::Catalog::file_in(store_root)).value();
    registry_options.docker_config = temp.path() / "docker-config.json";  // absent
    registry_options.platform = "linux/amd64";
    // Should a test reach for the network by mistake, it fails fast instead of hanging.
    registry_options.max_attempts = 1;
    registry_options.connect_timeout = std::chrono::milliseconds(2000);
    registry_options.backoff_initial = std::chrono::milliseconds(1);
  }

  // Serves `image` as host/repo:tag and pulls `reference` for `platform` into the store (blobs,
  // image record, ref record), as `imagefs pull` does.
  store::Digest pull(const std::string& host, const std::string& repo, const std::string& tag,
                     const std::vector<const TestImage*>& images, const std::string& reference,
                     const registry::Platform& platform) {
    auto fake = std::make_shared<registry::testing::FakeRegistry>(clock);
    fake->host = host;
    if (images.size() == 1) {
      registry::testing::push(*fake, repo, tag, *images[0]);
    } else {
      std::vector<std::pair<std::string, const TestImage*>> entries;
      for (const TestImage* image : images) {
        registry::testing::push(*fake, repo, "", *image);
        auto config = nlohmann::json::parse(image->config);
        std::string platform_text = "linux/" + config["architecture"].get<std::string>();
        if (config.contains("variant")) platform_text += "/" + config["variant"].get<std::string>();
        entries.emplace_back(platform_text, image);
      }
      fake->put_manifest(repo, tag, registry::testing::make_index(entries),
                         "application/vnd.oci.image.index.v1+json");
    }
    auto puller = registry::Puller::create(blobs, catalog, registry_options, fake, clock);
    EXPECT_TRUE(puller.ok()) << puller.error().message;
    auto ref = registry::parse_reference(reference);
    EXPECT_TRUE(ref.ok()) << reference;
    auto pulled = (*puller)->pull(*ref, platform);
    EXPECT_TRUE(pulled.ok()) << reference << ": " << pulled.error().message;
    return pulled->image.manifest;
  }

  // The standard content: python:3.12 for amd64 and arm64 (from an index), alpine (latest) and
  // localhost:5000/demo/app:1, for amd64.
  void pull_standard() {
    python = registry::testing::make_image("amd64", python_layers("amd64"));
    python_arm = registry::testing::make_image("arm64", python_layers("arm64"), "v8");
    alpine = registry::testing::make_image(
        "amd64", {make_tar({Dir("etc"), File("etc/alpine-release", "3.20.0\n")}, Filter::gzip)});
    demo = registry::testing::make_image(
        "amd64", {make_tar({Dir("srv"), File("srv/app", "demo app\n")}, Filter::gzip)});
    pull("registry-1.docker.io", "library/python", "3.12", {&python, &python_arm}, "python:3.12",
         kAmd64);
    pull("registry-1.docker.io", "library/python", "3.12", {&python, &python_arm}, "python:3.12",
         kArm64);
    pull("registry-1.docker.io", "library/alpine", "latest", {&alpine}, "alpine", kAmd64);
    pull("localhost:5000", "demo/app", "1", {&demo}, "localhost:5000/demo/app:1", kAmd64);
  }

  ImagesOptions images_options() {
    ImagesOptions o;
    o.registry = registry_options;
    o.tag_ttl = kTtl;
    o.log = [this](const std::string& line) {
      std::lock_guard lock(log_mu);
      log.push_back(line);
    };
    return o;
  }

  Mounted mount(ImagesOptions options) {
    auto images = Images::create(blobs, catalog, std::move(options));
    EXPECT_TRUE(images.ok()) << images.error().message;
    MountInfo info{"/mnt/imagefs-test", store_root.string(), (temp.path() / "log").string(),
                   1700000000};
    auto fs = Filesystem::create(*images, info);
    return Mounted{*images, std::move(fs)};
  }
  Mounted mount() { return mount(images_options()); }

  std::vector<std::string> logged() {
    std::lock_guard lock(log_mu);
    return log;
  }

  std::shared_ptr<registry::testing::FakeClock> clock =
      std::make_shared<registry::testing::FakeClock>();
  registry::testing::TempDir temp;
  std::filesystem::path store_root;
  std::shared_ptr<store::BlobStore> blobs;
  std::shared_ptr<store::Catalog> catalog;
  registry::RegistryOptions registry_options;
  TestImage python, python_arm, alpine, demo;
  std::mutex log_mu;
  std::vector<std::string> log;
};

// --- reading the file system the way the kernel would -------------------------------------------

inline int error_of(const Result<Entry>& r) { return r.ok() ? 0 : r.error().code; }

// Looks up each '/'-separated component from the top ("python:3.12/rootfs/etc").
inline Result<Entry> lookup_path(Filesystem& fs, std::string_view path, Ino from = kRootIno) {
  Entry e;
  e.ino = from;
  size_t start = 0;
  while (start < path.size()) {
    size_t slash = path.find('/', start);
    std::string_view name =
        path.substr(start, slash == std::string_view::npos ? slash : slash - start);
    auto next = fs.lookup(e.ino, name);
    if (!next.ok()) return next.error().context(std::string(path));
    e = *next;
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return e;
}

inline Entry must_lookup(Filesystem& fs, std::string_view path) {
  auto e = lookup_path(fs, path);
  EXPECT_TRUE(e.ok()) << path << ": " << (e.ok() ? "" : e.error().message);
  return e.ok() ? *e : Entry{};
}

// Every byte of an open file, read `chunk` bytes at a time.
inline std::string read_all(Filesystem& fs, const OpenFile& file, size_t chunk = 65536) {
  std::string out;
  std::vector<uint8_t> buffer(chunk);
  while (true) {
    auto n = fs.read(file, out.size(), buffer);
    EXPECT_TRUE(n.ok()) << n.error().message;
    if (!n.ok() || *n == 0) break;
    out.append(reinterpret_cast<const char*>(buffer.data()), *n);
    if (out.size() > (uint64_t{1} << 30)) break;
  }
  return out;
}

inline std::string read_ino(Filesystem& fs, Ino ino, size_t chunk = 65536) {
  auto file = fs.open(ino, O_RDONLY);
  EXPECT_TRUE(file.ok()) << file.error().message;
  return file.ok() ? read_all(fs, **file, chunk) : std::string();
}

inline std::string read_path(Filesystem& fs, std::string_view path, size_t chunk = 65536) {
  return read_ino(fs, must_lookup(fs, path).ino, chunk);
}

inline std::vector<std::string> names_of(const std::vector<DirItem>& items) {
  std::vector<std::string> names;
  for (const DirItem& item : items) names.push_back(item.name);
  return names;
}

inline std::vector<std::string> list(Filesystem& fs, std::string_view path) {
  auto dir = lookup_path(fs, path);
  EXPECT_TRUE(dir.ok()) << path << ": " << (dir.ok() ? "" : dir.error().message);
  if (!dir.ok()) return {};
  auto items = fs.readdir(dir->ino);
  EXPECT_TRUE(items.ok()) << path << ": " << items.error().message;
  return items.ok() ? names_of(*items) : std::vector<std::string>{};
}

// The archive a separate store makes of the same layers: the layer blobs ingested afresh, merged,
// and given to cpio::ArchiveMaker, independently of Images and Filesystem.
inline std::string reference_archive(const TestImage& image, cpio::ArchiveOptions options) {
  registry::testing::TempDir other;
  auto blobs = store::BlobStore::open(other.path() / "store").value();
  auto catalog = store::Catalog::open(store::Catalog::file_in(other.path() / "store")).value();
  auto cache = overlay::LayerCache::create(blobs).value();
  auto manifest = nlohmann::json::parse(image.manifest);
  std::vector<std::shared_ptr<const overlay::LayerIndex>> layers;
  for (size_t i = 0; i < image.layers.size(); ++i) {
    const auto& desc = manifest["layers"][i];
    store::LayerRecord record{store::Digest::of(image.layers[i]),
                              desc["mediaType"].get<std::string>(),
                              image.layers[i].size(),
                              {}};
    EXPECT_TRUE(blobs->put(record.digest, image.layers[i]).ok());
    auto index = cache->get(record);
    EXPECT_TRUE(index.ok()) << index.error().message;
    if (!index.ok()) return {};
    layers.push_back(*index);
  }
  auto tree = overlay::Tree::open(std::move(layers));
  EXPECT_TRUE(tree.ok());
  // The image's record and config, as a pull leaves them: the default /init reads the config.
  const store::Digest config = store::Digest::of(image.config);
  EXPECT_TRUE(blobs->put(config, image.config).ok());
  EXPECT_TRUE(catalog
                  ->put_image(store::ImageRecord{image.manifest_digest(),
                                                 "application/vnd.oci.image.manifest.v1+json",
                                                 config,
                                                 "linux/amd64",
                                                 {}})
                  .ok());
  auto maker = cpio::ArchiveMaker::create(blobs).value();
  auto archive = maker->make({image.manifest_digest(), image.config}, **tree, options);
  EXPECT_TRUE(archive.ok()) << archive.error().message;
  if (!archive.ok()) return {};
  std::string out((*archive)->size(), '\0');
  auto n = (*archive)->read(0, {reinterpret_cast<uint8_t*>(out.data()), out.size()});
  EXPECT_TRUE(n.ok() && *n == out.size());
  return out;
}

}  // namespace imagefs::fs::testing
