// The LMDB catalog: one environment file (MDB_NOSUBDIR), named databases `meta`, `refs` and
// `images`, values as versioned JSON. Key layout and schemas: docs/STORE_FORMAT.md.
#include "store/catalog.h"

#include <lmdb.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <tuple>
#include <utility>

#include "common/errno_error.h"
#include "common/mutex.h"
#include "store/file_util.h"

namespace imagefs::store {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int64_t kFormat = 1;  // the "v" of every record this code writes
constexpr unsigned kMaxDbs = 64;
constexpr uint64_t kMaxMapSize = uint64_t{1} << 40;

// LMDB returns errno values for system errors (ENOSPC, EACCES) and negative codes of its own.
// MDB_MAP_FULL keeps its code so that Catalog::update() can grow the map and retry; it never
// leaves this file.
Error lmdb_error(int rc, const std::string& what) {
  if (rc > 0) return make_error(rc, what + ": " + errno_text(rc));
  if (rc == MDB_MAP_FULL) return make_error(MDB_MAP_FULL, what + ": " + mdb_strerror(rc));
  return make_error(EIO, what + ": " + mdb_strerror(rc));
}

// LMDB 0.9 reports a short write of its data file as EIO, and a full disk makes short writes
// (mdb_page_flush: "TODO: Use which error code?"). Tell the user what happened when the file
// system is indeed (nearly) full.
Error explain_eio(Error error, const fs::path& file) {
  struct statvfs st {};
  constexpr uint64_t kNearlyFull = uint64_t{1} << 20;
  if (error.code == EIO && ::statvfs(file.c_str(), &st) == 0 &&
      static_cast<uint64_t>(st.f_bavail) * st.f_frsize < kNearlyFull)
    return make_error(
        ENOSPC, error.message + " (no space left on device while writing " + file.string() + ")");
  return error;
}

MDB_val to_val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string_view from_val(const MDB_val& v) {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

struct EnvClose {
  void operator()(MDB_env* env) const { mdb_env_close(env); }
};
using EnvPtr = std::unique_ptr<MDB_env, EnvClose>;

struct CursorClose {
  void operator()(MDB_cursor* cursor) const { mdb_cursor_close(cursor); }
};
using CursorPtr = std::unique_ptr<MDB_cursor, CursorClose>;

// One transaction. It holds the map lock shared for its whole life, because LMDB lets a process
// resize its map only while that process has no transaction open.
class Txn {
 public:
  Txn(std::shared_lock<std::shared_mutex> hold, MDB_txn* txn) : hold_(std::move(hold)), txn_(txn) {}
  Txn(Txn&& other) noexcept
      : hold_(std::move(other.hold_)), txn_(std::exchange(other.txn_, nullptr)) {}
  Txn& operator=(Txn&&) = delete;
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  ~Txn() {
    if (txn_ != nullptr) mdb_txn_abort(txn_);
  }

  [[nodiscard]] MDB_txn* get() const { return txn_; }
  // Commits; the transaction is gone afterwards whatever the outcome (LMDB frees it).
  int commit() { return mdb_txn_commit(std::exchange(txn_, nullptr)); }

 private:
  std::shared_lock<std::shared_mutex> hold_;  // released after the transaction ends
  MDB_txn* txn_;
};

Result<CursorPtr> open_cursor(MDB_txn* txn, MDB_dbi dbi, const std::string& what) {
  MDB_cursor* cursor = nullptr;
  if (int rc = mdb_cursor_open(txn, dbi, &cursor); rc != 0) return lmdb_error(rc, what);
  return CursorPtr(cursor);
}

// Calls fn(key, value) for every record of `dbi` whose key begins with `prefix`, in key order.
// fn returns false to stop.
template <typename Fn>
Result<void> scan(MDB_txn* txn, MDB_dbi dbi, std::string_view prefix, const std::string& what,
                  Fn&& fn) {
  IMAGEFS_TRY(cursor, open_cursor(txn, dbi, what));
  MDB_val key = to_val(prefix);
  MDB_val value{};
  int rc = mdb_cursor_get(cursor.get(), &key, &value, prefix.empty() ? MDB_FIRST : MDB_SET_RANGE);
  for (; rc == 0; rc = mdb_cursor_get(cursor.get(), &key, &value, MDB_NEXT)) {
    std::string_view k = from_val(key);
    if (!k.starts_with(prefix)) return {};
    if (!fn(k, from_val(value))) return {};
  }
  if (rc != MDB_NOTFOUND) return lmdb_error(rc, what);
  return {};
}

Result<std::optional<std::string>> get_raw(MDB_txn* txn, MDB_dbi dbi, std::string_view key,
                                           const std::string& what) {
  MDB_val k = to_val(key);
  MDB_val v{};
  int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<std::string>();
  if (rc != 0) return lmdb_error(rc, what);
  return std::optional<std::string>(std::string(from_val(v)));
}

Result<void> put_raw(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view value,
                     const std::string& what) {
  MDB_val k = to_val(key);
  MDB_val v = to_val(value);
  if (int rc = mdb_put(txn, dbi, &k, &v, 0); rc != 0) return lmdb_error(rc, what);
  return {};
}

Result<bool> del_raw(MDB_txn* txn, MDB_dbi dbi, std::string_view key, const std::string& what) {
  MDB_val k = to_val(key);
  int rc = mdb_del(txn, dbi, &k, nullptr);
  if (rc == MDB_NOTFOUND) return false;
  if (rc != 0) return lmdb_error(rc, what);
  return true;
}

// --- Records as JSON. Typed access stays in this section (conventions.md). ---

std::string dump(const json& j) {
  // Replace rather than throw on invalid UTF-8: no exception may leave the store.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Typed, checked access to the fields of one record, with errors that name the record.
class Fields {
 public:
  Fields(const json& j, std::string what) : j_(j), what_(std::move(what)) {}

  Result<std::string> str(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || !it->is_string()) return bad(key, "a string");
    return it->get<std::string>();
  }
  Result<int64_t> i64(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || !it->is_number_integer()) return bad(key, "an integer");
    return it->get<int64_t>();
  }
  Result<uint64_t> u64(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || !it->is_number_unsigned()) return bad(key, "a non-negative integer");
    return it->get<uint64_t>();
  }
  Result<Digest> digest(const char* key) const {
    IMAGEFS_TRY(text, str(key));
    auto d = Digest::parse(text);
    if (!d.ok()) return make_error(EIO, what_ + ": field \"" + key + "\": " + d.error().message);
    return std::move(*d);
  }
  [[nodiscard]] bool has(const char* key) const { return j_.contains(key); }

 private:
  Error bad(const char* key, const char* type) const {
    return make_error(EIO, what_ + ": field \"" + key + "\" is missing or not " + type);
  }
  const json& j_;
  std::string what_;
};

// Parses a record and checks its version.
Result<json> parse_record(std::string_view bytes, const std::string& what) {
  json j = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return make_error(EIO, what + ": not a JSON object");
  IMAGEFS_TRY(v, Fields(j, what).i64("v"));
  if (v > kFormat)
    return make_error(ENOTSUP, what + ": written by a newer imagefs (record version " +
                                   std::to_string(v) + ", this one reads up to " +
                                   std::to_string(kFormat) + ")");
  if (v < 1) return make_error(EIO, what + ": invalid record version " + std::to_string(v));
  return j;
}

std::string encode_ref(const RefRecord& ref) {
  json j = {{"v", kFormat},
            {"reference", ref.reference},
            {"platform", ref.platform},
            {"manifest", ref.manifest.str()},
            {"resolved_at", ref.resolved_at}};
  if (ref.index) j["index"] = ref.index->str();
  return dump(j);
}

Result<RefRecord> decode_ref(std::string_view bytes, std::string_view key) {
  std::string what = "catalog record refs/\"" + std::string(key) + "\"";
  IMAGEFS_TRY(j, parse_record(bytes, what));
  Fields f(j, what);
  IMAGEFS_TRY(reference, f.str("reference"));
  IMAGEFS_TRY(platform, f.str("platform"));
  IMAGEFS_TRY(manifest, f.digest("manifest"));
  IMAGEFS_TRY(resolved_at, f.i64("resolved_at"));
  std::optional<Digest> index;
  if (f.has("index")) {
    IMAGEFS_TRY(index_digest, f.digest("index"));
    index = std::move(index_digest);
  }
  return RefRecord{std::move(reference), std::move(platform), std::move(manifest), std::move(index),
                   resolved_at};
}

std::string encode_image(const ImageRecord& image) {
  json layers = json::array();
  for (const LayerRecord& layer : image.layers) {
    json l = {
        {"digest", layer.digest.str()}, {"media_type", layer.media_type}, {"size", layer.size}};
    if (!layer.urls.empty()) l["urls"] = layer.urls;
    layers.push_back(std::move(l));
  }
  return dump({{"v", kFormat},
               {"manifest", image.manifest.str()},
               {"manifest_media_type", image.manifest_media_type},
               {"config", image.config.str()},
               {"platform", image.platform},
               {"layers", std::move(layers)},
               {"size", image.size},
               {"pulled_at", image.pulled_at},
               {"last_used", image.last_used}});
}

Result<LayerRecord> decode_layer(const json& j, const std::string& what) {
  if (!j.is_object()) return make_error(EIO, what + ": not an object");
  Fields f(j, what);
  IMAGEFS_TRY(digest, f.digest("digest"));
  IMAGEFS_TRY(media_type, f.str("media_type"));
  IMAGEFS_TRY(size, f.u64("size"));
  LayerRecord layer{std::move(digest), std::move(media_type), size, {}};
  if (f.has("urls")) {
    const json& urls = j["urls"];
    if (!urls.is_array()) return make_error(EIO, what + ": field \"urls\" is not an array");
    for (const json& u : urls) {
      if (!u.is_string()) return make_error(EIO, what + ": field \"urls\" holds a non-string");
      layer.urls.push_back(u.get<std::string>());
    }
  }
  return layer;
}

Result<ImageRecord> decode_image(std::string_view bytes, std::string_view key) {
  std::string what = "catalog record images/\"" + std::string(key) + "\"";
  IMAGEFS_TRY(j, parse_record(bytes, what));
  Fields f(j, what);
  IMAGEFS_TRY(manifest, f.digest("manifest"));
  IMAGEFS_TRY(manifest_media_type, f.str("manifest_media_type"));
  IMAGEFS_TRY(config, f.digest("config"));
  IMAGEFS_TRY(platform, f.str("platform"));
  IMAGEFS_TRY(size, f.u64("size"));
  IMAGEFS_TRY(pulled_at, f.i64("pulled_at"));
  IMAGEFS_TRY(last_used, f.i64("last_used"));
  auto layers_it = j.find("layers");
  if (layers_it == j.end() || !layers_it->is_array())
    return make_error(EIO, what + ": field \"layers\" is missing or not an array");
  ImageRecord image{std::move(manifest),
                    std::move(manifest_media_type),
                    std::move(config),
                    std::move(platform),
                    {},
                    size,
                    pulled_at,
                    last_used};
  for (size_t i = 0; i < layers_it->size(); ++i) {
    IMAGEFS_TRY(layer, decode_layer((*layers_it)[i], what + " layer " + std::to_string(i)));
    image.layers.push_back(std::move(layer));
  }
  return image;
}

// --- The catalog. ---

enum class TxnKind { read, write };

class LmdbCatalog final : public Catalog {
 public:
  LmdbCatalog(fs::path file, EnvPtr env) : file_(std::move(file)), env_(std::move(env)) {
    max_key_ = static_cast<size_t>(mdb_env_get_maxkeysize(env_.get()));
  }

  // Opens the fixed databases and checks (or writes) the format version.
  Result<void> init() {
    return update("cannot initialize", [&](MDB_txn* txn) -> Result<void> {
      struct {
        const char* name;
        MDB_dbi* dbi;
      } dbs[] = {{"meta", &meta_}, {"refs", &refs_}, {"images", &images_}};
      for (auto& db : dbs)
        if (int rc = mdb_dbi_open(txn, db.name, MDB_CREATE, db.dbi); rc != 0)
          return lmdb_error(rc, std::string("cannot open database ") + db.name);
      std::string what = "cannot read the format of " + file_.string();
      IMAGEFS_TRY(format, get_raw(txn, meta_, "format", what));
      if (!format) return put_raw(txn, meta_, "format", dump({{"v", kFormat}}), what);
      IMAGEFS_TRY(record, parse_record(*format, "catalog record meta/\"format\""));
      (void)record;
      return {};
    });
  }

  Result<void> put_ref(const RefRecord& ref) override {
    IMAGEFS_TRY(key, ref_key(ref.reference, ref.platform));
    return update("cannot store ref " + ref.reference, [&](MDB_txn* txn) {
      return put_raw(txn, refs_, key, encode_ref(ref), "cannot store ref " + key);
    });
  }

  [[nodiscard]] Result<std::optional<RefRecord>> ref(std::string_view reference,
                                                     std::string_view platform) const override {
    IMAGEFS_TRY(key, ref_key(reference, platform));
    IMAGEFS_TRY(txn, begin(TxnKind::read));
    IMAGEFS_TRY(bytes, get_raw(txn.get(), refs_, key, context("cannot read ref " + key)));
    if (!bytes) return std::optional<RefRecord>();
    IMAGEFS_TRY(record, decode_ref(*bytes, key));
    return std::optional<RefRecord>(std::move(record));
  }

  [[nodiscard]] Result<std::vector<RefRecord>> refs() const override {
    IMAGEFS_TRY(txn, begin(TxnKind::read));
    std::vector<RefRecord> out;
    std::optional<Error> error;
    IMAGEFS_CHECK(scan(txn.get(), refs_, "", context("cannot list refs"),
                       [&](std::string_view key, std::string_view value) {
                         auto ref = decode_ref(value, key);
                         if (!ref.ok())
                           error = ref.error();
                         else
                           out.push_back(std::move(*ref));
                         return ref.ok();
                       }));
    if (error) return *error;
    return out;
  }

  Result<void> remove_ref(std::string_view reference, std::string_view platform) override {
    IMAGEFS_TRY(key, ref_key(reference, platform));
    return update("cannot remove ref " + key, [&](MDB_txn* txn) -> Result<void> {
      IMAGEFS_TRY(removed, del_raw(txn, refs_, key, context("cannot remove ref " + key)));
      (void)removed;
      return {};
    });
  }

  Result<void> put_image(const ImageRecord& image) override {
    const std::string& key = image.manifest.str();
    return update("cannot store image " + key, [&](MDB_txn* txn) {
      return put_raw(txn, images_, key, encode_image(image), context("cannot store image " + key));
    });
  }

  [[nodiscard]] Result<std::optional<ImageRecord>> image(const Digest& manifest) const override {
    IMAGEFS_TRY(txn, begin(TxnKind::read));
    const std::string& key = manifest.str();
    IMAGEFS_TRY(bytes, get_raw(txn.get(), images_, key, context("cannot read image " + key)));
    if (!bytes) return std::optional<ImageRecord>();
    IMAGEFS_TRY(record, decode_image(*bytes, key));
    return std::optional<ImageRecord>(std::move(record));
  }

  [[nodiscard]] Result<std::vector<ImageRecord>> images() const override {
    IMAGEFS_TRY(txn, begin(TxnKind::read));
    std::vector<ImageRecord> out;
    std::optional<Error> error;
    IMAGEFS_CHECK(scan(txn.get(), images_, "", context("cannot list images"),
                       [&](std::string_view key, std::string_view value) {
                         auto image = decode_image(value, key);
                         if (!image.ok())
                           error = image.error();
                         else
                           out.push_back(std::move(*image));
                         return image.ok();
                       }));
    if (error) return *error;
    return out;
  }

  Result<std::vector<RefRecord>> remove_image(const Digest& manifest) override {
    const std::string& key = manifest.str();
    std::string what = context("cannot remove image " + key);
    std::vector<RefRecord> removed;
    Result<void> done = update(what, [&](MDB_txn* txn) -> Result<void> {
      removed.clear();  // the body may run again after the map grew
      IMAGEFS_TRY(gone, del_raw(txn, images_, key, what));
      (void)gone;
      std::vector<std::string> keys;
      IMAGEFS_CHECK(scan(txn, refs_, "", what, [&](std::string_view k, std::string_view value) {
        // A damaged ref is left alone: it is not known to point here.
        if (auto ref = decode_ref(value, k); ref.ok() && ref->manifest == manifest) {
          keys.emplace_back(k);
          removed.push_back(std::move(*ref));
        }
        return true;
      }));
      for (const std::string& k : keys) IMAGEFS_CHECK(del_raw(txn, refs_, k, what));
      return {};
    });
    if (!done.ok()) return done.error();
    return removed;
  }

  Result<void> touch(const Digest& manifest, int64_t now) override {
    const std::string& key = manifest.str();
    std::string what = context("cannot update image " + key);
    return update(what, [&](MDB_txn* txn) -> Result<void> {
      IMAGEFS_TRY(bytes, get_raw(txn, images_, key, what));
      if (!bytes) return make_error(ENOENT, "image " + key + " is not in the catalog");
      IMAGEFS_TRY(image, decode_image(*bytes, key));
      if (image.last_used >= now) return {};  // nothing written: committing is then free
      image.last_used = now;
      return put_raw(txn, images_, key, encode_image(image), what);
    });
  }

 private:
  [[nodiscard]] std::string context(const std::string& what) const {
    return what + " in catalog " + file_.string();
  }

  Result<void> check_key(std::string_view key, const std::string& what) const {
    if (key.empty() || key.size() > max_key_)
      return make_error(EINVAL, what + ": key must be 1 to " + std::to_string(max_key_) +
                                    " bytes, not " + std::to_string(key.size()));
    return {};
  }

  [[nodiscard]] Result<std::string> ref_key(std::string_view reference,
                                            std::string_view platform) const {
    // A space separates the parts; references never contain one (the platform may be anything).
    if (reference.empty() || reference.find(' ') != std::string_view::npos)
      return make_error(EINVAL, "invalid reference \"" + std::string(reference) +
                                    "\" for the catalog: empty or contains a space");
    std::string key = std::string(reference) + ' ' + std::string(platform);
    IMAGEFS_CHECK(check_key(key, context("cannot use ref " + key)));
    return key;
  }

  [[nodiscard]] uint64_t map_size() const {
    std::shared_lock lock(map_mu_);
    MDB_envinfo info{};
    mdb_env_info(env_.get(), &info);
    return info.me_mapsize;
  }

  [[nodiscard]] Result<Txn> begin(TxnKind kind) const {
    for (;;) {
      std::shared_lock hold(map_mu_);
      MDB_txn* txn = nullptr;
      int rc = mdb_txn_begin(env_.get(), nullptr, kind == TxnKind::read ? MDB_RDONLY : 0, &txn);
      if (rc == 0) return Txn(std::move(hold), txn);
      if (rc != MDB_MAP_RESIZED) return lmdb_error(rc, context("cannot begin a transaction"));
      // Another process grew the map: adopt its size. LMDB allows that only while this process
      // has no transaction open, hence the exclusive lock.
      hold.unlock();
      std::unique_lock resize(map_mu_);
      if (int rc2 = mdb_env_set_mapsize(env_.get(), 0); rc2 != 0)
        return lmdb_error(rc2, context("cannot adopt the grown map size"));
    }
  }

  // Doubles the map, unless another thread already grew it past `seen`.
  Result<void> grow(uint64_t seen) const {
    std::unique_lock lock(map_mu_);
    MDB_envinfo info{};
    mdb_env_info(env_.get(), &info);
    if (info.me_mapsize > seen) return {};
    if (seen >= kMaxMapSize)
      return make_error(ENOSPC, context("the catalog reached its size limit of " +
                                        std::to_string(kMaxMapSize >> 30) + " GiB"));
    if (int rc = mdb_env_set_mapsize(env_.get(), std::min(seen * 2, kMaxMapSize)); rc != 0)
      return lmdb_error(rc, context("cannot grow the map"));
    return {};
  }

  // Runs `body(txn)` in a write transaction and commits it. When the map is full, grows it and
  // runs the body again from the start, so a body must not keep state across runs.
  template <typename Body>
  Result<void> update(const std::string& what, Body&& body) {
    for (;;) {
      uint64_t seen = map_size();
      Result<void> r = [&]() -> Result<void> {
        IMAGEFS_TRY(txn, begin(TxnKind::write));
        IMAGEFS_CHECK(body(txn.get()));
        if (int rc = txn.commit(); rc != 0) return lmdb_error(rc, what);
        return {};
      }();
      if (r.ok()) return r;
      if (r.error().code != MDB_MAP_FULL) return explain_eio(r.error(), file_);
      IMAGEFS_CHECK(grow(seen));
    }
  }

  fs::path file_;
  EnvPtr env_;
  size_t max_key_ = 511;
  MDB_dbi meta_ = 0;
  MDB_dbi refs_ = 0;
  MDB_dbi images_ = 0;
  // Transactions hold it shared; resizing the map holds it exclusively (see Txn).
  mutable std::shared_mutex map_mu_;
};

}  // namespace

namespace {

// The catalogs open in this process. LMDB forbids opening one environment twice in a process
// (closing either drops the POSIX locks of both), so a second open() of the same file returns the
// first Catalog. The pid is part of the key because a forked child inherits this table but must
// open its own environment.
struct OpenCatalogs {
  using Key = std::tuple<pid_t, dev_t, ino_t>;
  Mutex mu;
  std::map<Key, std::weak_ptr<Catalog>> open GUARDED_BY(mu);
};

OpenCatalogs& open_catalogs() {
  static auto* catalogs = new OpenCatalogs();  // never destroyed: Catalogs may outlive statics
  return *catalogs;
}

std::optional<OpenCatalogs::Key> key_of(const fs::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return std::nullopt;
  return OpenCatalogs::Key{::getpid(), st.st_dev, st.st_ino};
}

}  // namespace

Result<std::shared_ptr<Catalog>> Catalog::open(const fs::path& file, uint64_t map_size) {
  std::string what = "cannot open catalog " + file.string();
  OpenCatalogs& catalogs = open_catalogs();
  MutexLock lock(catalogs.mu);
  if (auto key = key_of(file)) {
    auto it = catalogs.open.find(*key);
    if (it != catalogs.open.end()) {
      if (auto existing = it->second.lock()) return existing;
      catalogs.open.erase(it);
    }
  }
  if (file.has_parent_path())
    if (auto r = detail::make_dirs(file.parent_path()); !r.ok()) return r.error().context(what);
  MDB_env* raw = nullptr;
  if (int rc = mdb_env_create(&raw); rc != 0) return lmdb_error(rc, what);
  EnvPtr env(raw);
  if (int rc = mdb_env_set_maxdbs(env.get(), kMaxDbs); rc != 0) return lmdb_error(rc, what);
  if (int rc = mdb_env_set_mapsize(env.get(), map_size); rc != 0) return lmdb_error(rc, what);
  // MDB_NOTLS: read transactions belong to the Txn object, not to the thread, so a thread may
  // hold several and the daemon's threads may share the environment freely.
  if (int rc = mdb_env_open(env.get(), file.c_str(), MDB_NOSUBDIR | MDB_NOTLS, 0644); rc != 0)
    return lmdb_error(rc, what);
  // Reader slots of processes that died (kill -9) would otherwise pin old pages forever and let
  // the file grow.
  int dead = 0;
  if (int rc = mdb_reader_check(env.get(), &dead); rc != 0) return lmdb_error(rc, what);
  auto catalog = std::make_shared<LmdbCatalog>(file, std::move(env));
  if (auto r = catalog->init(); !r.ok()) return r.error().context(what);
  if (auto key = key_of(file)) catalogs.open[*key] = catalog;
  return std::shared_ptr<Catalog>(std::move(catalog));
}

}  // namespace imagefs::store
