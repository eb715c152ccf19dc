// Pull orchestration: reference -> (index ->) manifest -> config -> catalog records, and layers
// downloaded by a few worker threads.
#include "registry/puller.h"

#include <algorithm>
#include <atomic>
#include <system_error>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "common/mutex.h"
#include "registry/client.h"
#include "registry/credentials.h"
#include "registry/manifest.h"
#include "registry/transport.h"
#include "store/derived.h"
#include "store/lease.h"

namespace imagefs::registry {
namespace {

// Progress reports are throttled to one per this many bytes per layer (plus start and end).
constexpr uint64_t kProgressStep = 256u << 10;

// Forwards to a ProgressSink one call at a time.
class SerialProgress {
 public:
  explicit SerialProgress(ProgressSink* sink) : sink_(sink) {}
  template <typename F>
  void operator()(F&& call) {
    if (sink_ == nullptr) return;
    MutexLock lock(mu_);
    call(*sink_);
  }
  [[nodiscard]] bool active() const { return sink_ != nullptr; }

 private:
  ProgressSink* sink_;
  Mutex mu_;
};

Notice notice_for(ProgressSink* progress) {
  if (progress == nullptr) return {};
  return [progress](const std::string& text) { progress->message(text); };
}

// Tells `progress` that a mirror, not `reference`'s registry, served `what`.
void report_served(ProgressSink* progress, const Reference& reference, const std::string& what,
                   const store::Digest& digest, const std::string& host) {
  if (progress != nullptr && !host.empty() && host != reference.domain)
    progress->served(what, digest, host);
}

}  // namespace

struct Puller::Blob {
  std::string bytes;
  std::string media_type;
  store::Digest digest;
};

Result<std::unique_ptr<Puller>> Puller::create(std::shared_ptr<store::BlobStore> blobs,
                                               std::shared_ptr<store::Catalog> catalog,
                                               const RegistryOptions& options) {
  HttpOptions http;
  http.user_agent = options.user_agent;
  http.ca_file = options.ca_file;
  http.connect_timeout = options.connect_timeout;
  http.stall_min_rate = options.stall_min_rate;
  http.stall_window = options.stall_window;
  return create(std::move(blobs), std::move(catalog), options, make_curl_http(http),
                system_clock());
}

Result<std::unique_ptr<Puller>> Puller::create(std::shared_ptr<store::BlobStore> blobs,
                                               std::shared_ptr<store::Catalog> catalog,
                                               const RegistryOptions& options,
                                               std::shared_ptr<Http> http,
                                               std::shared_ptr<Clock> clock) {
  Platform platform = host_platform();
  if (!options.platform.empty()) {
    IMAGEFS_TRY(parsed, parse_platform(options.platform));
    platform = std::move(parsed);
  }
  if (!options.ca_file.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(options.ca_file, ec))
      return make_error(ENOENT, "CA file " + options.ca_file.string() + " does not exist");
  }
  CredentialPolicy policy;
  policy.helper_max_age = options.credential_helper_max_age;
  policy.refusal_ttl = options.refusal_ttl;
  IMAGEFS_TRY(credentials, DockerCredentials::load(options.docker_config, clock, policy));
  auto transport =
      std::make_shared<Transport>(std::move(http), clock, std::move(credentials), options);
  IMAGEFS_TRY(
      hosts, RegistryHosts::load(options.hosts_dir, options.hosts_dir_is_default, options.mirrors));
  auto client = std::make_shared<RegistryClient>(std::move(transport), std::move(hosts));
  return std::unique_ptr<Puller>(new Puller(std::move(blobs), std::move(catalog), options,
                                            std::move(platform), std::move(clock),
                                            std::move(client)));
}

Puller::Puller(std::shared_ptr<store::BlobStore> blobs, std::shared_ptr<store::Catalog> catalog,
               const RegistryOptions& options, Platform platform, std::shared_ptr<Clock> clock,
               std::shared_ptr<RegistryClient> client)
    : blobs_(std::move(blobs)),
      catalog_(std::move(catalog)),
      options_(options),
      platform_(std::move(platform)),
      clock_(std::move(clock)),
      client_(std::move(client)) {
  if (options_.max_parallel == 0) options_.max_parallel = 1;
}

Puller::~Puller() = default;

Error Puller::scrub(Error error) const {
  error.message = client_->transport().auth().redact(std::move(error.message));
  return error;
}

Result<Puller::Blob> Puller::manifest_blob(const Reference& reference, const store::Digest& digest,
                                           const std::string& what, ProgressSink* progress,
                                           std::vector<RepairedBlob>* repaired) {
  bool damaged = false;
  if (blobs_->contains(digest)) {
    Result<std::string> bytes = blobs_->read(digest);
    if (bytes.ok()) {
      IMAGEFS_TRY(type, manifest_media_type(*bytes, ""));
      return Blob{std::move(*bytes), std::move(type), digest};
    }
    // The disk changed the stored copy: fetch it again and put it in its place.
    if (bytes.error().code != EUCLEAN) return bytes.error();
    damaged = true;
    if (progress != nullptr)
      progress->message("the stored " + what + " " + digest.str() +
                        " does not match its digest (the disk changed it): fetching it again");
  }
  std::string host;
  IMAGEFS_TRY(fetched,
              client_->get_manifest(reference, digest.str(), digest, notice_for(progress), &host));
  report_served(progress, reference, what, digest, host);
  if (damaged) {
    IMAGEFS_CHECK(blobs_->repair(fetched.digest, fetched.bytes));
    if (repaired != nullptr) repaired->push_back(RepairedBlob{digest, what});
  } else {
    IMAGEFS_CHECK(blobs_->put(fetched.digest, fetched.bytes));
  }
  return Blob{std::move(fetched.bytes), std::move(fetched.media_type), std::move(fetched.digest)};
}

Result<std::string> Puller::config_blob(const Reference& reference, const Descriptor& config,
                                        ProgressSink* progress,
                                        std::vector<RepairedBlob>* repaired) {
  Notice notice = notice_for(progress);
  bool damaged = false;
  if (blobs_->contains(config.digest)) {
    Result<std::string> bytes = blobs_->read(config.digest);
    if (bytes.ok()) return bytes;
    if (bytes.error().code != EUCLEAN) return bytes.error();
    damaged = true;
    if (progress != nullptr)
      progress->message("the stored config " + config.digest.str() +
                        " does not match its digest (the disk changed it): fetching it again");
  }
  // Under the blob's writer lock, so that processes pulling one image at once fetch it once:
  // the others wait here and then find it done.
  IMAGEFS_TRY(writer, damaged ? blobs_->open_repair_writer(config.digest, config.size)
                              : blobs_->open_writer(config.digest, config.size));
  if (writer->done()) return blobs_->read(config.digest);
  std::string host;
  IMAGEFS_TRY(bytes, client_->get_blob(reference, config, "config", notice, &host));
  report_served(progress, reference, "config", config.digest, host);
  IMAGEFS_CHECK(writer->restart());
  IMAGEFS_CHECK(
      writer->write(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())));
  IMAGEFS_CHECK(writer->commit(config.size));
  if (damaged && repaired != nullptr) repaired->push_back(RepairedBlob{config.digest, "config"});
  return bytes;
}

Result<ResolvedImage> Puller::resolve(const Reference& reference, const Platform& platform,
                                      ProgressSink* progress) {
  // Keeps gc away while blobs are written that no catalog record references yet.
  IMAGEFS_TRY(lease, store::Lease::pull(blobs_->root()));
  Result<ResolvedImage> resolved = resolve_unscrubbed(reference, platform, progress);
  if (!resolved.ok()) return scrub(resolved.error());
  return resolved;
}

Result<ResolvedImage> Puller::resolve_unscrubbed(const Reference& reference,
                                                 const Platform& platform_in,
                                                 ProgressSink* progress) {
  Platform want = normalize(platform_in);
  const std::string name = reference.str();
  Notice notice = notice_for(progress);

  // The document the reference names: by digest from the store if possible, by tag from the
  // registry (HEAD first: when the store already has that digest, nothing is downloaded).
  std::vector<RepairedBlob> repaired;
  std::optional<Blob> top;
  if (!reference.digest.empty()) {
    Result<store::Digest> digest = store::Digest::parse(reference.digest);
    if (!digest.ok()) return digest.error().context(name);
    IMAGEFS_TRY(blob, manifest_blob(reference, digest.value(), "manifest", progress, &repaired));
    top = std::move(blob);
  } else {
    std::string tag = reference.tag.empty() ? "latest" : reference.tag;
    IMAGEFS_TRY(head, client_->head_manifest(reference, tag, notice));
    if (head && head->digest && blobs_->contains(*head->digest)) {
      IMAGEFS_TRY(blob, manifest_blob(reference, *head->digest, "manifest", progress, &repaired));
      top = std::move(blob);
    } else {
      std::string host;
      IMAGEFS_TRY(fetched, client_->get_manifest(reference, tag, std::nullopt, notice, &host));
      report_served(progress, reference, "manifest", fetched.digest, host);
      if (!blobs_->contains(fetched.digest))
        IMAGEFS_CHECK(blobs_->put(fetched.digest, fetched.bytes));
      top =
          Blob{std::move(fetched.bytes), std::move(fetched.media_type), std::move(fetched.digest)};
    }
  }

  Result<ManifestDocument> top_doc = parse_manifest(top->bytes, top->media_type);
  if (!top_doc.ok()) return top_doc.error().context(name);

  std::optional<store::Digest> index_digest;
  std::optional<Platform> index_platform;
  Blob manifest_bytes = *top;
  ImageManifest* manifest = std::get_if<ImageManifest>(&top_doc.value());
  Result<ManifestDocument> child_doc = make_error(EIO, "unused");
  if (const auto* index = std::get_if<ImageIndex>(&top_doc.value())) {
    std::vector<Platform> platforms;
    platforms.reserve(index->manifests.size());
    for (const Descriptor& d : index->manifests)
      platforms.push_back(d.platform.value_or(Platform{}));
    Result<size_t> choice = choose_platform(platforms, want);
    if (!choice.ok()) return choice.error().context(name);
    const Descriptor& entry = index->manifests[choice.value()];
    if (!media_type::is_manifest(entry.media_type)) {
      return make_error(EIO, name + ": the index entry for " + want.str() + " is a " +
                                 entry.media_type +
                                 (media_type::is_index(entry.media_type)
                                      ? ", an index inside an index, which imagefs does not follow"
                                      : ", not an image manifest"));
    }
    // A top document that is an index: if it was repaired, it was as the index.
    if (!repaired.empty() && repaired.back().digest == top->digest) repaired.back().what = "index";
    IMAGEFS_TRY(child, manifest_blob(reference, entry.digest, "manifest", progress, &repaired));
    child_doc = parse_manifest(child.bytes, child.media_type);
    if (!child_doc.ok()) return child_doc.error().context(name + " (" + want.str() + ")");
    manifest = std::get_if<ImageManifest>(&child_doc.value());
    if (manifest == nullptr)
      return make_error(EIO, name + ": the index entry for " + want.str() + " is another index");
    index_digest = top->digest;
    index_platform = normalize(entry.platform.value_or(Platform{}));
    manifest_bytes = std::move(child);
  }

  // The config: small, fetched now because the daemon needs it for any lookup.
  const Descriptor& config_desc = manifest->config;
  if (config_desc.media_type != media_type::kOciConfig &&
      config_desc.media_type != media_type::kDockerConfig)
    return make_error(EIO, name + " is not a container image: its config has media type " +
                               config_desc.media_type);
  IMAGEFS_TRY(config_bytes, config_blob(reference, config_desc, progress, &repaired));
  Result<ImageConfig> config = parse_image_config(config_bytes);
  if (!config.ok()) return config.error().context(name);

  for (size_t i = 0; i < manifest->layers.size(); ++i) {
    const Descriptor& layer = manifest->layers[i];
    if (!media_type::is_image_layer(layer.media_type))
      return make_error(EIO, name + " is not a container image: layer " + std::to_string(i + 1) +
                                 " (" + layer.digest.str() + ") has media type " +
                                 layer.media_type);
  }
  if (!config->diff_ids.empty() && config->diff_ids.size() != manifest->layers.size())
    return make_error(EIO, name + ": malformed image: the config lists " +
                               std::to_string(config->diff_ids.size()) +
                               " layers and the manifest " +
                               std::to_string(manifest->layers.size()));

  Platform image_platform = index_platform ? *index_platform : normalize(config->platform);
  if (!index_platform && !image_platform.os.empty() &&
      !choose_platform({image_platform}, want).ok() && progress != nullptr) {
    progress->message("warning: " + name + " is an image for " + image_platform.str() + ", not " +
                      want.str());
  }

  int64_t now = clock_->unix_now();
  int64_t pulled_at = now;
  if (Result<std::optional<store::ImageRecord>> existing = catalog_->image(manifest_bytes.digest);
      existing.ok() && existing.value())
    pulled_at = existing.value()->pulled_at;
  uint64_t size = manifest_bytes.bytes.size() + config_desc.size;
  std::vector<store::LayerRecord> layers;
  layers.reserve(manifest->layers.size());
  for (const Descriptor& d : manifest->layers) {
    layers.push_back(store::LayerRecord{d.digest, d.media_type, d.size, d.urls});
    size += d.size;
  }
  store::ImageRecord image{.manifest = manifest_bytes.digest,
                           .manifest_media_type = manifest_bytes.media_type,
                           .config = config_desc.digest,
                           .platform = image_platform.str(),
                           .layers = std::move(layers),
                           .size = size,
                           .pulled_at = pulled_at,
                           .last_used = now};
  IMAGEFS_CHECK(catalog_->put_image(image));
  store::RefRecord ref{.reference = name,
                       .platform = want.str(),
                       .manifest = manifest_bytes.digest,
                       .index = index_digest,
                       .resolved_at = now};
  IMAGEFS_CHECK(catalog_->put_ref(ref));
  return ResolvedImage{reference, want, std::move(ref), std::move(image), std::move(repaired)};
}

Result<void> Puller::fetch_layers(const Reference& source, const store::ImageRecord& image,
                                  ProgressSink* progress) {
  // A layer found present is skipped; gc must not remove it before the pull ends.
  IMAGEFS_TRY(lease, store::Lease::pull(blobs_->root()));
  Result<void> fetched =
      fetch_unscrubbed(source, image, progress, StoredBlobs::trust, nullptr, nullptr);
  if (!fetched.ok()) return scrub(fetched.error());
  return fetched;
}

Result<void> Puller::fetch_unscrubbed(const Reference& source, const store::ImageRecord& image,
                                      ProgressSink* progress_sink, StoredBlobs stored,
                                      const std::set<store::Digest>* only,
                                      std::vector<RepairedBlob>* repaired) {
  const size_t count = image.layers.size();
  SerialProgress progress(progress_sink);
  Notice notice;
  if (progress.active()) {
    notice = [&progress](const std::string& text) {
      progress([&](ProgressSink& s) { s.message(text); });
    };
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  Mutex error_mu;
  std::optional<Error> first_error;  // guarded by error_mu
  Mutex repaired_mu;                 // guards *repaired

  auto fail = [&](const LayerId& id, const Error& error) {
    progress([&](ProgressSink& s) { s.layer_failed(id, scrub(error)); });
    stop = true;
    MutexLock lock(error_mu);
    if (!first_error) first_error = error;
  };

  auto fetch_some = [&] {
    for (;;) {
      if (stop) return;
      size_t i = next++;
      if (i >= count) return;
      const store::LayerRecord& layer = image.layers[i];
      if (only != nullptr && !only->contains(layer.digest)) continue;
      LayerId id{layer.digest, i, count, layer.size};
      bool damaged = false;
      if (blobs_->contains(layer.digest)) {
        if (stored == StoredBlobs::trust) {
          progress([&](ProgressSink& s) { s.layer_cached(id); });
          continue;
        }
        // Hashed before it is trusted: the bytes are few next to a download's.
        uint64_t shown = 0;
        store::HashProgress on_hashed;
        if (progress.active()) {
          progress([&](ProgressSink& s) { s.layer_checking(id, 0); });
          on_hashed = [&](uint64_t bytes) {
            if (bytes - shown < kProgressStep && bytes != layer.size) return;
            shown = bytes;
            progress([&](ProgressSink& s) { s.layer_checking(id, bytes); });
          };
        }
        Result<store::BlobState> state = blobs_->check(layer.digest, on_hashed);
        if (!state.ok()) {
          fail(id, state.error().context("layer " + std::to_string(i + 1) + " of " +
                                         std::to_string(count) + " " + layer.digest.str()));
          return;
        }
        if (*state == store::BlobState::good) {
          progress([&](ProgressSink& s) { s.layer_cached(id); });
          continue;
        }
        damaged = *state == store::BlobState::bad;
        if (damaged) progress([&](ProgressSink& s) { s.layer_damaged(id); });
      }
      std::string what = "layer " + std::to_string(i + 1) + " of " + std::to_string(count);
      store::BlobStore::WaitReport waiting;
      if (progress.active()) {
        waiting = [&](uint64_t bytes) {
          progress([&](ProgressSink& s) { s.layer_waiting(id, bytes); });
        };
      }
      // A damaged copy stays in place until the new bytes, verified, are renamed over it.
      Result<std::unique_ptr<store::BlobWriter>> writer =
          damaged ? blobs_->open_repair_writer(layer.digest, layer.size)
                  : blobs_->open_writer(layer.digest, layer.size, waiting);
      if (!writer.ok()) {
        fail(id, writer.error().context(what + " " + layer.digest.str()));
        return;
      }
      if (writer.value()->done()) {  // another process finished it while we waited
        progress([&](ProgressSink& s) { s.layer_cached(id); });
        continue;
      }
      uint64_t start = writer.value()->offset();
      progress([&](ProgressSink& s) { s.layer_started(id, start); });
      uint64_t reported = start;
      RegistryClient::Progress on_bytes;
      if (progress.active()) {
        on_bytes = [&](uint64_t bytes) {
          if (bytes >= reported && bytes - reported < kProgressStep && bytes != layer.size) return;
          reported = bytes;
          progress([&](ProgressSink& s) { s.layer_progress(id, bytes); });
        };
      }
      Descriptor descriptor{.media_type = layer.media_type,
                            .digest = layer.digest,
                            .size = layer.size,
                            .urls = layer.urls,
                            .platform = std::nullopt};
      std::unique_ptr<store::BlobWriter> held = std::move(writer).value();
      RegistryClient::WriterSource reopen = [&]() {
        return damaged ? blobs_->open_repair_writer(layer.digest, layer.size)
                       : blobs_->open_writer(layer.digest, layer.size, waiting);
      };
      std::string host;
      Result<void> r =
          client_->fetch_blob(source, descriptor, held, reopen, what, on_bytes, notice, &host);
      held.reset();
      if (r.ok() && !host.empty() && host != source.domain)
        progress([&](ProgressSink& s) { s.served(what, layer.digest, host); });
      if (!r.ok()) {
        fail(id, r.error());
        return;
      }
      if (damaged) {
        // What was derived from the bad bytes (the layer's index and data) is built again from
        // the good ones when next needed. Archive segments and plans are cpio/'s: the caller's.
        if (Result<void> removed = store::remove_derived(*blobs_, layer.digest); !removed.ok()) {
          fail(id, removed.error());
          return;
        }
        MutexLock lock(repaired_mu);
        if (repaired != nullptr) repaired->push_back(RepairedBlob{layer.digest, what});
      }
      progress([&](ProgressSink& s) { s.layer_finished(id); });
    }
  };

  // No exception leaves a worker (in a thread it would end the process): it becomes the pull's
  // Error.
  auto worker = [&] {
    std::optional<Error> thrown;
    try {
      fetch_some();
    } catch (const std::exception& e) {
      thrown = make_error(EIO, std::string("downloading layers failed: ") + e.what());
    } catch (...) {
      thrown = make_error(EIO, "downloading layers failed (an unknown exception)");
    }
    if (thrown) {
      stop = true;
      MutexLock lock(error_mu);
      if (!first_error) first_error = std::move(thrown);
    }
  };

  size_t threads = std::min<size_t>(options_.max_parallel, count);
  if (threads <= 1) {
    worker();
  } else {
    std::vector<std::jthread> pool;
    pool.reserve(threads);
    for (size_t t = 0; t < threads; ++t) {
      try {
        pool.emplace_back(worker);
      } catch (const std::system_error&) {
        break;  // fewer threads, same result
      }
    }
    if (pool.empty()) worker();
  }
  MutexLock lock(error_mu);
  if (first_error) return *first_error;
  return {};
}

Result<ResolvedImage> Puller::pull(const Reference& reference, const Platform& platform,
                                   ProgressSink* progress, StoredBlobs stored) {
  // One lease across both halves, so gc cannot run between them.
  IMAGEFS_TRY(lease, store::Lease::pull(blobs_->root()));
  IMAGEFS_TRY(resolved, resolve(reference, platform, progress));
  Result<void> fetched =
      fetch_unscrubbed(reference, resolved.image, progress, stored, nullptr, &resolved.repaired);
  if (!fetched.ok()) return scrub(fetched.error());
  return resolved;
}

Result<std::vector<RepairedBlob>> Puller::repair(const Reference& source,
                                                 const store::ImageRecord& image,
                                                 const std::set<store::Digest>& bad,
                                                 ProgressSink* progress) {
  IMAGEFS_TRY(lease, store::Lease::pull(blobs_->root()));
  std::vector<RepairedBlob> repaired;
  auto run = [&]() -> Result<void> {
    // Manifest-like documents first (the config's descriptor is read from the manifest), each
    // only if it is still bad: another process may have repaired it meanwhile.
    std::vector<std::pair<store::Digest, std::string>> documents;
    for (const store::Digest& d : bad) {
      if (d == image.manifest) {
        documents.emplace_back(d, "manifest");
      } else if (d != image.config &&
                 std::none_of(image.layers.begin(), image.layers.end(),
                              [&](const store::LayerRecord& l) { return l.digest == d; })) {
        documents.emplace_back(d, "index");  // the index `source` was resolved through
      }
    }
    std::sort(documents.begin(), documents.end(),
              [](const auto& a, const auto& b) { return a.second < b.second; });  // "index" first
    for (const auto& [digest, what] : documents) {
      IMAGEFS_TRY(state, blobs_->check(digest));
      if (state != store::BlobState::bad) continue;
      IMAGEFS_CHECK(manifest_blob(source, digest, what, progress, &repaired));
    }
    if (bad.contains(image.config)) {
      IMAGEFS_TRY(state, blobs_->check(image.config));
      if (state == store::BlobState::bad) {
        IMAGEFS_TRY(bytes, blobs_->read(image.manifest));
        IMAGEFS_TRY(doc, parse_manifest(bytes, image.manifest_media_type));
        const auto* manifest = std::get_if<ImageManifest>(&doc);
        if (manifest == nullptr)
          return make_error(EIO, image.manifest.str() + " is not an image manifest");
        IMAGEFS_CHECK(config_blob(source, manifest->config, progress, &repaired));
      }
    }
    return fetch_unscrubbed(source, image, progress, StoredBlobs::verify, &bad, &repaired);
  };
  if (Result<void> done = run(); !done.ok()) return scrub(done.error().context(source.str()));
  return repaired;
}

}  // namespace imagefs::registry
