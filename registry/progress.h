// What a pull reports while it runs, for the CLI's progress display and the daemon's log.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/result.h"
#include "store/digest.h"

namespace imagefs::registry {

struct LayerId {
  store::Digest digest;
  size_t index = 0;   // position in the image, base layer 0
  size_t count = 0;   // layers in the image
  uint64_t size = 0;  // bytes to download (compressed size)
};

// Receives progress events. For each layer any number of layer_waiting, then exactly one of:
// layer_cached; or layer_started, any number of layer_progress, then layer_finished or
// layer_failed. A pull that checks the layers already stored (Puller::pull with
// StoredBlobs::verify) first reports layer_checking as it hashes a stored layer, then
// layer_cached if it matched its digest, or layer_damaged and the download events of its repair.
// The puller never calls a sink from two threads at once (calls are serialized), but they may
// come from worker threads, so an implementation must not assume the thread that started the
// pull. Implementations must not call back into the puller.
class ProgressSink {
 public:
  virtual ~ProgressSink() = default;
  // `offset` bytes were already held from an interrupted earlier download (resumed, not refetched).
  virtual void layer_started(const LayerId& layer, uint64_t offset) {
    (void)layer;
    (void)offset;
  }
  // `bytes` of layer.size are now held (monotonic, except after a server ignored Range).
  virtual void layer_progress(const LayerId& layer, uint64_t bytes) {
    (void)layer;
    (void)bytes;
  }
  // Another process (a concurrent pull of the same image, a mount) is downloading the layer;
  // it holds `bytes` so far. This pull waits for it, then finds the layer cached (or resumes
  // where the other stopped, if it died).
  virtual void layer_waiting(const LayerId& layer, uint64_t bytes) {
    (void)layer;
    (void)bytes;
  }
  virtual void layer_finished(const LayerId& layer) { (void)layer; }
  // The layer was already in the store: nothing downloaded.
  virtual void layer_cached(const LayerId& layer) { (void)layer; }
  virtual void layer_failed(const LayerId& layer, const Error& error) {
    (void)layer;
    (void)error;
  }
  // The store's copy of the layer is being hashed: `bytes` of layer.size so far.
  virtual void layer_checking(const LayerId& layer, uint64_t bytes) {
    (void)layer;
    (void)bytes;
  }
  // The store's copy did not match its digest: it is downloaded again (layer_started follows).
  virtual void layer_damaged(const LayerId& layer) { (void)layer; }
  // `what` ("manifest", "index", "config", "layer 2 of 3", "tag latest") came from `host`, a
  // host of the registry's hosts.toml or --mirror that is not the registry itself (never called
  // for the registry's own server). For the log, `imagefs status` and "via HOST" lines.
  virtual void served(const std::string& what, const store::Digest& digest,
                      const std::string& host) {
    (void)what;
    (void)digest;
    (void)host;
  }
  // A one-line note for people: retries, resumed downloads, platform warnings.
  virtual void message(const std::string& text) { (void)text; }
};

}  // namespace imagefs::registry
