// Plan files: shared derived files (store/derived.h) ROOT/segments/plans/<SHA-256 of the key>,
// holding the key, the record as JSON and a checksum of both (docs/STORE_FORMAT.md, "Archive
// plans").
#include "cpio/plan_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

#include "common/errno_error.h"
#include "common/unique_fd.h"
#include "cpio/segment.h"
#include "store/derived.h"
#include "store/digest.h"
#include "store/lease.h"

namespace imagefs::cpio::detail {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int kRecordVersion = 1;
// Plans are shared derived files (store/derived.h) of this kind.
constexpr std::string_view kPlansKind = "plans";
// Far larger than any plan (an image of a million files has a few thousand segments).
constexpr off_t kMaxPlanFile = off_t{64} << 20;
constexpr size_t kHexDigits = 64;

bool is_hex_name(std::string_view name) {
  return name.size() == kHexDigits &&
         name.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

fs::path plan_path(const fs::path& store_root, std::string_view key) {
  return store::shared_path(store_root, kPlansKind, store::Digest::of(key).hex());
}

// The checksum line: SHA-256 of the key line and the JSON line.
std::string checksum(std::string_view covered) {
  return std::string(store::Digest::of(covered).hex());
}

// The JSON of the record stored under `key`, or nullopt (absent, damaged, another key).
Result<std::optional<json>> read_record(const fs::path& store_root, std::string_view key) {
  const fs::path path = plan_path(store_root, key);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return std::optional<json>();
    return errno_error(errno, "cannot open archive plan", path);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_error(errno, "cannot stat", path);
  if (st.st_size <= 0 || st.st_size > kMaxPlanFile) return std::optional<json>();
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    ssize_t n = ::pread(fd.get(), text.data() + got, text.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(errno, "cannot read archive plan", path);
    if (n == 0) return std::optional<json>();  // shrank under us: not a file this code wrote
    got += static_cast<size_t>(n);
  }
  // "<key>\n<json>\n<checksum>\n"
  if (text.size() < kHexDigits + 1 || text.back() != '\n') return std::optional<json>();
  const size_t sum_at = text.size() - kHexDigits - 1;
  if (sum_at == 0 || text[sum_at - 1] != '\n') return std::optional<json>();
  const std::string_view covered(text.data(), sum_at);
  if (std::string_view(text).substr(sum_at, kHexDigits) != checksum(covered))
    return std::optional<json>();
  const size_t key_end = covered.find('\n');
  if (covered.substr(0, key_end) != key) return std::optional<json>();
  json j = json::parse(covered.substr(key_end + 1), nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("v") || !j["v"].is_number_integer() ||
      j["v"].get<int>() > kRecordVersion)
    return std::optional<json>();
  // Marks the plan used, for gc (store/gc.h).
  store::mark_used(path, st, static_cast<int64_t>(::time(nullptr)));
  return std::optional<json>(std::move(j));
}

Result<void> write_record(const fs::path& store_root, std::string_view key, const json& record) {
  std::string text(key);
  text += '\n';
  // A record can hold guest paths (--inject GUEST) that are not UTF-8, on which dump() throws:
  // such a plan is not cached (the caller gets an error), and nothing throws.
  try {
    text += record.dump();
  } catch (const json::exception& e) {
    return make_error(EINVAL, "cannot record the plan " + std::string(key) +
                                  ": a path is not UTF-8 (" + e.what() + ")");
  }
  text += '\n';
  text += checksum(text);
  text += '\n';
  // No fsync (the point of keeping plans out of the catalog): a crash may leave this file empty
  // or torn under its name, which the checksum turns into "no plan".
  return store::replace_shared(store_root, kPlansKind, store::Digest::of(key).hex(), text);
}

json encode_segments(const std::vector<SegmentRef>& segments) {
  json out = json::array();
  for (const SegmentRef& s : segments) out.push_back(json::array({s.key, s.compressed, s.raw}));
  return out;
}

std::optional<std::vector<SegmentRef>> decode_segments(const json& j) {
  if (!j.is_array()) return std::nullopt;
  std::vector<SegmentRef> out;
  out.reserve(j.size());
  for (const json& s : j) {
    if (!s.is_array() || s.size() != 3 || !s[0].is_string() || !s[1].is_number_unsigned() ||
        !s[2].is_number_unsigned())
      return std::nullopt;
    SegmentRef ref{s[0].get<std::string>(), s[1].get<uint64_t>(), s[2].get<uint64_t>()};
    if (!is_hex_name(ref.key)) return std::nullopt;
    out.push_back(std::move(ref));
  }
  return out;
}

}  // namespace

Result<std::optional<PlanRecord>> read_plan(const fs::path& store_root, std::string_view key) {
  IMAGEFS_TRY(j, read_record(store_root, key));
  if (!j || !j->contains("raw_size") || !(*j)["raw_size"].is_number_unsigned() ||
      !j->contains("segments"))
    return std::optional<PlanRecord>();
  std::optional<std::vector<SegmentRef>> segments = decode_segments((*j)["segments"]);
  if (!segments) return std::optional<PlanRecord>();
  return std::optional<PlanRecord>(
      PlanRecord{std::move(*segments), (*j)["raw_size"].get<uint64_t>()});
}

Result<std::optional<ImagePartRecord>> read_image_part(const fs::path& store_root,
                                                       std::string_view key) {
  IMAGEFS_TRY(j, read_record(store_root, key));
  if (!j || !j->contains("raw_size") || !(*j)["raw_size"].is_number_unsigned() ||
      !j->contains("segments") || !j->contains("paths") || !(*j)["paths"].is_object())
    return std::optional<ImagePartRecord>();
  std::optional<std::vector<SegmentRef>> segments = decode_segments((*j)["segments"]);
  if (!segments) return std::optional<ImagePartRecord>();
  ImagePartRecord record{std::move(*segments), (*j)["raw_size"].get<uint64_t>(), {}};
  for (const auto& [path, mode] : (*j)["paths"].items()) {
    if (!mode.is_number_unsigned() || mode.get<uint64_t>() > UINT32_MAX)
      return std::optional<ImagePartRecord>();
    record.paths.emplace(path, mode.get<uint32_t>());
  }
  return std::optional<ImagePartRecord>(std::move(record));
}

Result<void> write_plan(const fs::path& store_root, std::string_view key,
                        const PlanRecord& record) {
  return write_record(store_root, key,
                      json{{"v", kRecordVersion},
                           {"raw_size", record.raw_size},
                           {"segments", encode_segments(record.segments)}});
}

Result<void> write_image_part(const fs::path& store_root, std::string_view key,
                              const ImagePartRecord& record) {
  json paths = json::object();
  for (const auto& [path, mode] : record.paths) paths[path] = mode;
  return write_record(store_root, key,
                      json{{"v", kRecordVersion},
                           {"raw_size", record.raw_size},
                           {"segments", encode_segments(record.segments)},
                           {"paths", std::move(paths)}});
}

Result<store::SharedUse> shared_files_by_image(const fs::path& store_root) {
  store::SharedUse out;
  const fs::path dir =
      store::shared_path(store_root, kPlansKind, std::string(kHexDigits, '0')).parent_path();
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    if (ec.value() == ENOENT) return out;
    return errno_error(ec.value(), "cannot list", dir);
  }
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const fs::path path = it->path();
    const std::string name = path.filename().string();
    if (!is_hex_name(name)) continue;
    std::ifstream in(path, std::ios::binary);
    std::string key, record;
    if (!std::getline(in, key) || !std::getline(in, record)) continue;
    // "sha256:<manifest hex>/<format>/...": the plan of that image.
    size_t slash = key.find('/');
    if (slash == std::string::npos) continue;
    auto manifest = store::Digest::parse(std::string_view(key).substr(0, slash));
    if (!manifest.ok()) continue;
    std::set<fs::path>& files = out[*manifest];
    files.insert(path);
    json j = json::parse(record, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("segments")) continue;
    if (auto segments = decode_segments(j["segments"]))
      for (const SegmentRef& s : *segments)
        for (Format format : {Format::gzip, Format::zstd, Format::none})
          files.insert(segment_path(store_root, format, s.key));
  }
  if (ec && ec.value() != ENOENT) return errno_error(ec.value(), "cannot list", dir);
  return out;
}

Result<std::set<fs::path>> shared_files_in_use(const fs::path& store_root) {
  IMAGEFS_TRY(by_image, shared_files_by_image(store_root));
  return store::files_in_use(store_root, by_image);
}

}  // namespace imagefs::cpio::detail

namespace imagefs::cpio {

Result<std::set<std::filesystem::path>> shared_files_in_use(
    const std::filesystem::path& store_root) {
  return detail::shared_files_in_use(store_root);
}

Result<store::SharedUse> shared_files_by_image(const std::filesystem::path& store_root) {
  return detail::shared_files_by_image(store_root);
}

}  // namespace imagefs::cpio
