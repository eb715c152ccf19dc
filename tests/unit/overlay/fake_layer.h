// An in-memory LayerIndex for tests of the merged tree: entries are declared in tar order and
// come out in the form the real ingest gives (layer_index.h): unique by path, sorted by (parent,
// name), whiteouts folded, implicit parents added, same-layer hardlinks resolved to an index.
// It also records which entries were decoded, so tests can check that work stays lazy.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "overlay/layer_index.h"
#include "store/digest.h"

namespace imagefs::overlay::testing {

struct Meta {
  uint32_t mode = 0;  // 0: the type's usual mode (0644 files, 0755 directories, 0777 symlinks)
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime = 0;
};

class FakeLayer final : public LayerIndex {
 public:
  struct Entry {
    std::string path;
    EntryType type = EntryType::regular;
    bool implicit = false;
    bool opaque = false;
    uint32_t mode = 0;
    uint32_t uid = 0;
    uint32_t gid = 0;
    int64_t mtime_sec = 0;
    std::string content;  // regular files
    std::string link;     // symlink or hardlink target
    uint32_t rdev_major = 0;
    uint32_t rdev_minor = 0;
    std::vector<std::pair<std::string, std::string>> xattrs;
    uint32_t hardlink_target = kNoEntry;
  };

  // Declares a layer's entries in tar order; a later entry for a path replaces an earlier one.
  class Builder {
   public:
    explicit Builder(std::string name) : name_(std::move(name)) {}

    Builder& file(const std::string& path, std::string content, Meta meta = {}) {
      Entry entry = make(path, EntryType::regular, meta, 0644);
      entry.content = std::move(content);
      return add(std::move(entry));
    }
    Builder& dir(const std::string& path, Meta meta = {}) {
      return add(make(path, EntryType::directory, meta, 0755));
    }
    Builder& symlink(const std::string& path, std::string target, Meta meta = {}) {
      Entry entry = make(path, EntryType::symlink, meta, 0777);
      entry.link = std::move(target);
      return add(std::move(entry));
    }
    // Resolved in this layer when `target` was declared before (as the ingest does), otherwise
    // left to the lower layers (kNoEntry). Its own mode is deliberately odd: it must not show.
    Builder& hardlink(const std::string& path, std::string target) {
      Entry entry = make(path, EntryType::hardlink, Meta{.mode = 01111, .uid = 4242}, 0);
      entry.link = std::move(target);
      return add(std::move(entry));
    }
    Builder& device(const std::string& path, EntryType type, uint32_t major, uint32_t minor,
                    Meta meta = {}) {
      Entry entry = make(path, type, meta, 0600);
      entry.rdev_major = major;
      entry.rdev_minor = minor;
      return add(std::move(entry));
    }
    // ".wh.NAME" for `path`.
    Builder& whiteout(const std::string& path) {
      whiteouts_.push_back(path);
      return *this;
    }
    // ".wh..wh..opq" in the directory `path`.
    Builder& opaque(const std::string& path) {
      opaques_.push_back(path);
      return *this;
    }
    // The "./" entry: the root directory's own metadata.
    Builder& root(Meta meta = {}) {
      root_ = make("", EntryType::directory, meta, 0755);
      return *this;
    }
    // ".wh..wh..opq" at the top of the tar: every lower layer is hidden.
    Builder& root_opaque() {
      root_opaque_ = true;
      return *this;
    }
    // An extended attribute on the entry last declared at `path` ("" for the root entry).
    Builder& root_xattr(std::string name, std::string value) {
      if (root_) root_->xattrs.emplace_back(std::move(name), std::move(value));
      return *this;
    }
    // An extended attribute on the entry last declared at `path`.
    Builder& xattr(const std::string& path, std::string name, std::string value) {
      for (auto it = entries_.rbegin(); it != entries_.rend(); ++it) {
        if (it->path == path) {
          it->xattrs.emplace_back(std::move(name), std::move(value));
          break;
        }
      }
      return *this;
    }

    [[nodiscard]] std::shared_ptr<FakeLayer> build() const {
      // Unique by path, the last declaration winning; `order` keeps the tar order of survivors.
      std::map<std::string, Entry> by_path;
      std::map<std::string, size_t> order;
      for (size_t i = 0; i < entries_.size(); ++i) {
        by_path[entries_[i].path] = entries_[i];
        order[entries_[i].path] = i;
      }
      auto add_parents = [&](const std::string& path) {
        for (size_t slash = path.find('/'); slash != std::string::npos;
             slash = path.find('/', slash + 1)) {
          std::string parent = path.substr(0, slash);
          if (by_path.count(parent) == 0) {
            Entry implicit;
            implicit.path = parent;
            implicit.type = EntryType::directory;
            implicit.implicit = true;  // mode 0 on purpose: an implicit entry has no metadata
            by_path.emplace(parent, std::move(implicit));
          }
        }
      };
      std::vector<std::string> paths;
      for (const auto& [path, entry] : by_path) paths.push_back(path);
      for (const std::string& path : paths) add_parents(path);
      for (const std::string& path : opaques_) {
        add_parents(path);
        auto it = by_path.find(path);
        if (it == by_path.end()) {
          Entry implicit;
          implicit.path = path;
          implicit.type = EntryType::directory;
          implicit.implicit = true;
          it = by_path.emplace(path, std::move(implicit)).first;
        }
        if (it->second.type == EntryType::directory) it->second.opaque = true;
      }
      for (const std::string& path : whiteouts_) add_parents(path);
      for (const std::string& path : whiteouts_) {
        auto it = by_path.find(path);
        if (it == by_path.end()) {
          Entry whiteout;
          whiteout.path = path;
          whiteout.type = EntryType::whiteout;
          by_path.emplace(path, std::move(whiteout));
        } else if (it->second.type == EntryType::directory) {
          it->second.opaque = true;  // deleted and recreated in this layer: a new directory
          if (it->second.implicit) {
            it->second.implicit = false;
            it->second.mode = 0755;
          }
        }
      }

      std::vector<Entry> sorted;
      for (auto& [path, entry] : by_path) sorted.push_back(std::move(entry));
      std::sort(sorted.begin(), sorted.end(),
                [](const Entry& a, const Entry& b) { return split(a.path) < split(b.path); });
      std::map<std::string, uint32_t> index_of;
      for (uint32_t i = 0; i < sorted.size(); ++i) index_of[sorted[i].path] = i;
      for (Entry& entry : sorted) {
        if (entry.type != EntryType::hardlink) continue;
        auto target = index_of.find(entry.link);
        auto own = order.find(entry.path);
        auto target_order = order.find(entry.link);
        if (target != index_of.end() && own != order.end() && target_order != order.end() &&
            target_order->second < own->second) {
          entry.hardlink_target = target->second;
        }
      }
      std::optional<Entry> root = root_;
      if (root_opaque_ && !root) {
        Entry implicit;
        implicit.type = EntryType::directory;
        implicit.implicit = true;
        root = std::move(implicit);
      }
      if (root) root->opaque = root_opaque_;
      return std::make_shared<FakeLayer>(name_, std::move(sorted), std::move(root));
    }

   private:
    static Entry make(const std::string& path, EntryType type, const Meta& meta,
                      uint32_t usual_mode) {
      Entry entry;
      entry.path = path;
      entry.type = type;
      entry.mode = meta.mode != 0 ? meta.mode : usual_mode;
      entry.uid = meta.uid;
      entry.gid = meta.gid;
      entry.mtime_sec = meta.mtime;
      return entry;
    }
    Builder& add(Entry entry) {
      entries_.push_back(std::move(entry));
      return *this;
    }

    std::string name_;
    std::vector<Entry> entries_;
    std::vector<std::string> whiteouts_;
    std::vector<std::string> opaques_;
    std::optional<Entry> root_;
    bool root_opaque_ = false;
  };

  FakeLayer(const std::string& name, std::vector<Entry> entries,
            std::optional<Entry> root = std::nullopt)
      : digest_(store::Digest::of(name)),
        entries_(std::move(entries)),
        root_(std::move(root)),
        touched_(new std::atomic<uint32_t>[entries_.size() + 1]) {
    for (const Entry& entry : entries_) parents_.push_back(split(entry.path).first);
    reset_counters();
  }

  [[nodiscard]] const store::Digest& digest() const override { return digest_; }
  [[nodiscard]] size_t size() const override { return entries_.size(); }

  [[nodiscard]] LayerEntry entry(size_t index) const override {
    touched_[index].fetch_add(1, std::memory_order_relaxed);
    LayerEntry out = view(entries_.at(index));
    out.size = content_entry(index).content.size();
    return out;
  }

  [[nodiscard]] std::optional<LayerEntry> root() const override {
    if (!root_) return std::nullopt;
    return view(*root_);
  }

  [[nodiscard]] std::vector<Xattr> root_xattrs() const override {
    std::vector<Xattr> out;
    if (root_) {
      for (const auto& [name, value] : root_->xattrs) out.push_back(Xattr{name, value});
    }
    return out;
  }

  [[nodiscard]] static LayerEntry view(const Entry& e) {
    LayerEntry out;
    out.path = e.path;
    out.type = e.type;
    out.implicit = e.implicit;
    out.opaque = e.opaque;
    out.mode = e.mode;
    out.uid = e.uid;
    out.gid = e.gid;
    out.mtime_sec = e.mtime_sec;
    out.link = e.link;
    out.rdev_major = e.rdev_major;
    out.rdev_minor = e.rdev_minor;
    out.hardlink_target = e.hardlink_target;
    out.size = e.content.size();
    return out;
  }

  [[nodiscard]] std::vector<Xattr> xattrs(size_t index) const override {
    std::vector<Xattr> out;
    for (const auto& [name, value] : entries_.at(index).xattrs) out.push_back(Xattr{name, value});
    return out;
  }

  [[nodiscard]] std::pair<size_t, size_t> children(std::string_view dir) const override {
    children_calls_.fetch_add(1, std::memory_order_relaxed);
    auto range = std::equal_range(parents_.begin(), parents_.end(), dir);
    return {static_cast<size_t>(range.first - parents_.begin()),
            static_cast<size_t>(range.second - parents_.begin())};
  }

  [[nodiscard]] std::optional<size_t> find(std::string_view path) const override {
    find_calls_.fetch_add(1, std::memory_order_relaxed);
    auto key = split(path);
    auto it = std::lower_bound(entries_.begin(), entries_.end(), key,
                               [](const Entry& e, const auto& k) { return split(e.path) < k; });
    if (it == entries_.end() || it->path != path) return std::nullopt;
    return static_cast<size_t>(it - entries_.begin());
  }

  Result<size_t> read(size_t index, uint64_t offset, std::span<uint8_t> out) const override {
    const Entry& data = content_entry(index);
    if (data.type != EntryType::regular) {
      return make_error(
          EIO, "layer " + digest_.str() + ": entry " + entries_.at(index).path + " has no content");
    }
    if (offset >= data.content.size()) return size_t{0};
    size_t n = std::min<size_t>(out.size(), data.content.size() - offset);
    std::memcpy(out.data(), data.content.data() + offset, n);
    return n;
  }

  [[nodiscard]] int data_fd() const override { return -1; }

  // Test access.
  [[nodiscard]] const Entry& raw(size_t index) const { return entries_.at(index); }
  [[nodiscard]] const std::optional<Entry>& raw_root() const { return root_; }
  [[nodiscard]] uint32_t touched(size_t index) const { return touched_[index].load(); }
  [[nodiscard]] size_t children_calls() const { return children_calls_.load(); }
  [[nodiscard]] size_t find_calls() const { return find_calls_.load(); }
  void reset_counters() const {
    for (size_t i = 0; i < entries_.size(); ++i) touched_[i].store(0);
    children_calls_.store(0);
    find_calls_.store(0);
  }

  // (parent, name) of a path: the order entries are sorted in.
  static std::pair<std::string_view, std::string_view> split(std::string_view path) {
    size_t slash = path.rfind('/');
    if (slash == std::string_view::npos) return {std::string_view(), path};
    return {path.substr(0, slash), path.substr(slash + 1)};
  }

 private:
  // The entry whose bytes `index` has: itself, or the same-layer target of a hardlink.
  [[nodiscard]] const Entry& content_entry(size_t index) const {
    const Entry* e = &entries_.at(index);
    for (int hops = 0;
         e->type == EntryType::hardlink && e->hardlink_target != kNoEntry && hops < 64; ++hops) {
      e = &entries_.at(e->hardlink_target);
    }
    return *e;
  }

  store::Digest digest_;
  std::vector<Entry> entries_;
  std::optional<Entry> root_;
  std::vector<std::string_view> parents_;  // views into entries_' paths
  std::unique_ptr<std::atomic<uint32_t>[]> touched_;
  mutable std::atomic<size_t> children_calls_{0};
  mutable std::atomic<size_t> find_calls_{0};
};

}  // namespace imagefs::overlay::testing
