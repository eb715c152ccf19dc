// Fuzzes the archive writer end to end, read back by a newc reader of this file's own (not
// cpio/'s code). The input chooses a layer's entries (names with odd bytes, modes, owners, mtimes,
// sizes, symlinks, hardlinks, devices, fifos), the format, the /init (imagefs' default or a host
// file), an injected file, --exec and the image config; the layer is written by libarchive,
// ingested and merged as for any image, and the archive made by cpio::ArchiveMaker as `imagefs
// build` makes it. The archive is read through Archive::read in chunks of a chosen size,
// decompressed (every gzip member and zstd frame, each of which must end on an entry boundary, as
// the kernel demands), and parsed strictly: "070701" headers of hex fields, NUL-terminated names
// padded to 4 bytes, data padded to 4 with zeros, TRAILER!!! at the very end. Then:
//  - the kernel's rules: names unique, each after its parent directory, directories and devices
//    with filesize 0, symlinks with a non-empty target, nlink 1 (directories 2) except hardlink
//    groups, whose members share (ino, dev) and whose first member alone carries the data;
//  - every entry of the tree is in the archive with its mode, owner, mtime, device numbers and
//    bytes, and every entry the input chose is there as chosen (but those /init and the injected
//    file replace); the archive holds nothing else than /init, its config, the injected file and
//    its parents, /dev and /dev/console;
//  - /init, /.imagefs/init.conf and the injected file hold the right bytes.
// The first byte may also choose the reader's test: the rest becomes a plan record (behind a valid
// checksum) naming segments, which are made with the sizes it claims; ArchiveMaker::cached()
// must then serve an archive whose every read equals the segments' bytes in order, or nothing.
#include <archive.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "cpio/archive.h"
#include "cpio/plan_key.h"
#include "cpio/plan_store.h"
#include "cpio/segment.h"
#include "init/default_init.h"
#include "init/image_config.h"
#include "init/init_config.h"
#include "overlay/layer_index.h"
#include "overlay/tree.h"
#include "store/blob_store.h"
#include "store/derived.h"
#include "tests/unit/overlay/tar_builder.h"

namespace {

namespace fs = std::filesystem;
using imagefs::Result;
using imagefs::cpio::Archive;
using imagefs::cpio::ArchiveMaker;
using imagefs::cpio::ArchiveOptions;
using imagefs::cpio::Format;
using imagefs::overlay::testing::TarEntry;

// A failed invariant names itself before the crash libFuzzer records.
[[noreturn]] void fail(int line, const char* what) {
  std::fprintf(stderr, "cpio_roundtrip_fuzz.cpp:%d: invariant failed: %s\n", line, what);
  std::abort();
}
#define CHECK(x) ((x) ? (void)0 : fail(__LINE__, #x))

// IMAGEFS_FUZZ_VERBOSE=1: one line per input, to see what a corpus exercises.
bool verbose() {
  static const bool on = std::getenv("IMAGEFS_FUZZ_VERBOSE") != nullptr;  // NOLINT
  return on;
}

// Takes bytes from the input, zeros once it is used up.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }
  uint32_t u16() {
    const uint32_t low = byte();
    return low | (uint32_t{byte()} << 8);
  }
  uint32_t u32() {
    const uint32_t low = u16();
    return low | (u16() << 16);
  }
  std::string bytes(size_t n) {
    std::string out;
    while (n-- > 0 && at_ < size_) out.push_back(static_cast<char>(data_[at_++]));
    return out;
  }
  [[nodiscard]] bool empty() const { return at_ >= size_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

// A scratch directory on tmpfs where there is one (segments and indexes are fsynced).
class TempDir {
 public:
  TempDir() {
    const std::string base = fs::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string tmpl = base + "/imagefs-cpio-fuzz-XXXXXX";
    CHECK(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void spit(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  CHECK(out.good());
}

// A name for a line of verbose output.
std::string printable_name(std::string_view name) {
  std::string out;
  for (const char c : name) {
    if (c >= 0x20 && c < 0x7f) {
      out += c;
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
      out += hex;
    }
  }
  return out;
}

// --- the independent newc reader -------------------------------------------------------------

struct NewcEntry {
  uint64_t offset = 0;  // of its header in the raw stream
  uint64_t end = 0;     // after its data's padding
  std::string name;
  uint32_t ino = 0, mode = 0, uid = 0, gid = 0, nlink = 0, mtime = 0, filesize = 0;
  uint32_t devmajor = 0, devminor = 0, rdevmajor = 0, rdevminor = 0;
  std::string data;
};

uint32_t hex8(std::string_view s) {
  uint32_t v = 0;
  for (char c : s) {
    uint32_t d = 0;
    if (c >= '0' && c <= '9') {
      d = static_cast<uint32_t>(c - '0');
    } else if (c >= 'A' && c <= 'F') {
      d = static_cast<uint32_t>(c - 'A' + 10);
    } else if (c >= 'a' && c <= 'f') {
      d = static_cast<uint32_t>(c - 'a' + 10);
    } else {
      std::abort();  // not a hex digit
    }
    v = (v << 4) | d;
  }
  return v;
}

bool all_zero(std::string_view s) { return s.find_first_not_of('\0') == std::string_view::npos; }

// The whole raw stream as entries, up to and including the trailer, which must end it.
std::vector<NewcEntry> parse_newc(std::string_view raw) {
  std::vector<NewcEntry> out;
  uint64_t at = 0;
  for (;;) {
    CHECK(at % 4 == 0 && at + 110 <= raw.size());
    std::string_view h = raw.substr(at, 110);
    CHECK(h.substr(0, 6) == "070701");
    NewcEntry e;
    e.offset = at;
    uint32_t* fields[] = {&e.ino,      &e.mode,      &e.uid,      &e.gid,
                          &e.nlink,    &e.mtime,     &e.filesize, &e.devmajor,
                          &e.devminor, &e.rdevmajor, &e.rdevminor};
    for (size_t i = 0; i < 11; ++i) *fields[i] = hex8(h.substr(6 + 8 * i, 8));
    const uint32_t namesize = hex8(h.substr(94, 8));
    CHECK(hex8(h.substr(102, 8)) == 0);  // check: only for "070702"
    CHECK(namesize >= 2 && at + 110 + namesize <= raw.size());
    e.name = std::string(raw.substr(at + 110, namesize - 1));
    CHECK(raw[at + 110 + namesize - 1] == '\0');
    CHECK(e.name.find('\0') == std::string::npos);
    uint64_t data = at + 110 + namesize;
    const uint64_t name_pad = (4 - data % 4) % 4;
    CHECK(data + name_pad <= raw.size() && all_zero(raw.substr(data, name_pad)));
    data += name_pad;
    CHECK(data + e.filesize <= raw.size());
    e.data = std::string(raw.substr(data, e.filesize));
    const uint64_t data_pad = (4 - e.filesize % 4) % 4;
    CHECK(data + e.filesize + data_pad <= raw.size());
    CHECK(all_zero(raw.substr(data + e.filesize, data_pad)));
    e.end = data + e.filesize + data_pad;
    at = e.end;
    const bool trailer = e.name == "TRAILER!!!";
    out.push_back(std::move(e));
    if (trailer) {
      CHECK(at == raw.size());
      return out;
    }
  }
}

// Every gzip member decompressed in turn; `ends` gets the raw offset at which each one ends.
std::string gunzip(std::string_view bytes, std::vector<uint64_t>& ends) {
  std::string raw;
  size_t at = 0;
  std::vector<char> buffer(1 << 16);
  while (at < bytes.size()) {
    z_stream z{};
    CHECK(inflateInit2(&z, 16 + 15) == Z_OK);
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data() + at));
    z.avail_in = static_cast<uInt>(bytes.size() - at);
    int rc = Z_OK;
    while (rc == Z_OK) {
      z.next_out = reinterpret_cast<Bytef*>(buffer.data());
      z.avail_out = static_cast<uInt>(buffer.size());
      rc = inflate(&z, Z_NO_FLUSH);
      raw.append(buffer.data(), buffer.size() - z.avail_out);
    }
    const uLong used = z.total_in;
    inflateEnd(&z);
    CHECK(rc == Z_STREAM_END);  // a whole member, with a right CRC and length
    // The kernel's gzip reader skips FNAME only: FEXTRA, FCOMMENT and FHCRC must be clear.
    CHECK((static_cast<uint8_t>(bytes[at + 3]) & 0x16) == 0);
    at += used;
    ends.push_back(raw.size());
  }
  return raw;
}

std::string unzstd(std::string_view bytes, std::vector<uint64_t>& ends) {
  std::string raw;
  size_t at = 0;
  while (at < bytes.size()) {
    const size_t n = ZSTD_findFrameCompressedSize(bytes.data() + at, bytes.size() - at);
    CHECK(!ZSTD_isError(n));
    const unsigned long long content = ZSTD_getFrameContentSize(bytes.data() + at, n);
    CHECK(content != ZSTD_CONTENTSIZE_ERROR && content != ZSTD_CONTENTSIZE_UNKNOWN);
    CHECK(content <= (64u << 20));
    std::string out(content, '\0');
    const size_t got = ZSTD_decompress(out.data(), out.size(), bytes.data() + at, n);
    CHECK(!ZSTD_isError(got) && got == content);
    raw += out;
    at += n;
    ends.push_back(raw.size());
  }
  return raw;
}

// The whole archive through Archive::read in `chunk`-byte reads.
std::string read_all(const Archive& archive, size_t chunk) {
  std::string out(archive.size(), '\0');
  uint64_t at = 0;
  while (at < out.size()) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(chunk, out.size() - at));
    Result<size_t> n =
        archive.read(at, std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data() + at), want));
    CHECK(n.ok() && *n == want);  // short only at the end
    at += *n;
  }
  uint8_t past[8];
  Result<size_t> end = archive.read(archive.size(), past);
  CHECK(end.ok() && *end == 0);
  return out;
}

// --- the layer the input chooses --------------------------------------------------------------

struct Chosen {
  TarEntry tar;
  uint32_t type = S_IFREG;  // of what the path becomes (a hardlink: its target's)
  std::string content;      // regular files and hardlinks: the bytes; symlinks: the target
  std::string link_group;   // hardlinks and their targets: the target's path
};

std::string pattern(size_t n, uint32_t seed) {
  std::string out(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (char& c : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c = static_cast<char>(x % 7 == 0 ? x >> 8 : 'a' + x % 5);  // compressible, not trivially
  }
  return out;
}

// A name component from the input: any bytes but '/' and NUL, never ".", ".." or a whiteout.
std::string component(Input& in) {
  // Now and then a name the archive's tail cares about.
  static constexpr const char* kSpecial[] = {
      "init",       ".imagefs", "dev", "console",  "init.conf", "opt",  "agent",   "new",
      "TRAILER!!!", ".",        "..",  "\xff\xfe", "a b",       "x\ny", "\x1b[0m", "."};
  const uint8_t first = in.byte();
  if (first >= 240) {
    std::string name = kSpecial[first - 240];
    if (name == "." || name == "..") name += "x";
    return name;
  }
  const size_t n = 1 + first % 12;
  std::string name = in.bytes(n);
  for (char& c : name) {
    if (c == '/' || c == '\0') c = '_';
  }
  if (name.empty()) name = "e";
  if (name == "." || name == "..") name += "x";
  if (name.starts_with(".wh.")) name[0] = '_';
  return name;
}

std::vector<Chosen> choose_entries(Input& in) {
  std::vector<Chosen> out;
  std::vector<std::string> dirs = {""};
  std::set<std::string> paths;
  const size_t count = in.byte() % 24;
  for (size_t i = 0; i < count && !in.empty(); ++i) {
    const uint8_t kind = in.byte() % 8;
    const std::string& parent = dirs[in.byte() % dirs.size()];
    std::string path = (parent.empty() ? "" : parent + "/") + component(in);
    if (!paths.insert(path).second) continue;
    Chosen c;
    TarEntry& t = c.tar;
    t.name = path;
    t.perm = in.u16() & 07777;
    const uint8_t owner = in.byte();
    t.uid = owner & 1 ? in.u32() & 0x7fffffff : in.byte();
    t.gid = owner & 2 ? in.u32() & 0x7fffffff : in.byte();
    t.mtime = static_cast<int32_t>(in.u32());         // before 1970 as well: the archive clamps
    if (owner & 4) t.mtime = int64_t{in.u32()} << 8;  // after 2106 as well
    switch (kind) {
      case 0:
        t.type = AE_IFDIR;
        c.type = S_IFDIR;
        dirs.push_back(path);
        break;
      case 1:
      case 2: {
        t.type = AE_IFREG;
        c.type = S_IFREG;
        const uint8_t size = in.byte();
        // Mostly small files from the input; now and then one past run_limit() (256 KiB for
        // gzip), which is a segment of its own.
        t.data = size & 0x80 ? pattern((size & 0x7f) * 4099, size) : in.bytes(size);
        c.content = t.data;
        break;
      }
      case 3: {
        t.type = AE_IFLNK;
        t.perm = 0777;
        c.type = S_IFLNK;
        std::string target = in.bytes(1 + in.byte() % 40);
        std::replace(target.begin(), target.end(), '\0', '.');
        if (target.empty()) target = "t";
        t.symlink = target;
        c.content = target;
        break;
      }
      case 4: {
        // A hardlink to an earlier non-directory that is not a hardlink itself.
        std::vector<size_t> targets;
        for (size_t j = 0; j < out.size(); ++j) {
          if (out[j].type != S_IFDIR && out[j].tar.hardlink.empty()) targets.push_back(j);
        }
        if (targets.empty()) {
          paths.erase(path);
          continue;
        }
        Chosen& target = out[targets[in.byte() % targets.size()]];
        t.hardlink = target.tar.name;
        t.perm = target.tar.perm;
        c.type = target.type;
        c.content = target.content;
        target.link_group = target.tar.name;
        c.link_group = target.tar.name;
        break;
      }
      default: {
        static constexpr unsigned kTypes[] = {AE_IFCHR, AE_IFBLK, AE_IFIFO};
        static constexpr uint32_t kModes[] = {S_IFCHR, S_IFBLK, S_IFIFO};
        const size_t k = (kind - 5) % 3;
        t.type = kTypes[k];
        c.type = kModes[k];
        if (k < 2) {
          t.rdev_major = in.u16() & 0xfff;
          t.rdev_minor = in.u16();
        }
        break;
      }
    }
    out.push_back(std::move(c));
  }
  return out;
}

// --- the round trip -----------------------------------------------------------------------------

uint32_t clamp_mtime(int64_t sec) {
  return static_cast<uint32_t>(std::clamp<int64_t>(sec, 0, UINT32_MAX));
}

struct Env {
  TempDir dir;
  std::shared_ptr<imagefs::store::BlobStore> blobs;
  std::shared_ptr<imagefs::overlay::LayerCache> cache;
  std::shared_ptr<ArchiveMaker> maker;
  Env() {
    blobs = *imagefs::store::BlobStore::open(dir.path() / "store");
    cache = *imagefs::overlay::LayerCache::create(blobs);
    maker = *ArchiveMaker::create(blobs);
  }
};

constexpr std::string_view kConfigs[] = {
    R"({"config":{"Cmd":["/bin/sh","-c","echo hi"],"Env":["A=1"],"User":"1:2"}})",
    R"({"config":{"Entrypoint":"/bin/sh -c","Cmd":"echo hello world","WorkingDir":"/srv"}})",
    R"({"config":{"Entrypoint":{"not":"a list"},"Cmd":[1,2],"Env":["B=2"]}})",
    R"({"os":"linux"})",
};

// One store for many inputs, so that /init's segment (800 KB of the default init) is compressed
// once per format and level rather than at every input; started afresh now and then, so that it
// stays small. Sharing is sound: segments are named by their content, plans by the input.
Env& shared_env() {
  static std::unique_ptr<Env> env;
  static int uses = 0;
  if (!env || ++uses % 64 == 0) {
    env.reset();
    env = std::make_unique<Env>();
  }
  return *env;
}

void round_trip(Input& in, std::string_view whole_input) {
  const uint8_t flags = in.byte();
  const Format format = std::array{Format::none, Format::gzip, Format::zstd}[flags % 3];
  const bool default_init = (flags & 0x0c) == 0;  // a quarter: its 800 KB cost time
  const bool with_exec = (flags & 0x10) != 0;
  const bool with_inject = (flags & 0x20) != 0;
  const std::string_view config_json = kConfigs[(flags >> 6) & 3];
  const size_t chunk = 1 + in.u16() * 7;

  Env& env = shared_env();
  std::vector<Chosen> chosen = choose_entries(in);
  std::vector<TarEntry> tar_entries;
  for (const Chosen& c : chosen) tar_entries.push_back(c.tar);
  const std::string tar = imagefs::overlay::testing::make_tar(tar_entries);
  const auto digest = imagefs::store::Digest::of(tar);
  CHECK(env.blobs->put(digest, tar).ok());
  auto layer = env.cache->get(
      imagefs::store::LayerRecord{digest, imagefs::overlay::testing::kTar, tar.size(), {}});
  if (!layer.ok()) {
    if (verbose()) std::fprintf(stderr, "ingest: %s\n", layer.error().message.c_str());
    // As docker reads layers: a blob that starts with gzip's or zstd's magic bytes is taken for
    // a compressed one even when it is a tar whose first name starts so (docs/LAYER_FORMAT.md).
    // Other compressors' magic ("BZh", xz) is looked at only where the ustar magic is not.
    const bool magic_name = tar.starts_with("\x1f\x8b") || tar.starts_with("\x28\xb5\x2f\xfd");
    if (magic_name) return;
  }
  CHECK(layer.ok());  // what libarchive wrote, ingest reads
  auto tree_or = imagefs::overlay::Tree::open({*layer});
  CHECK(tree_or.ok());
  imagefs::overlay::Tree& tree = **tree_or;

  ArchiveOptions options;
  options.format = format;
  options.gzip_level = 1 + in.byte() % 12;
  options.zstd_level = 1 + in.byte() % 5;
  std::string init_bytes;
  if (default_init) {
    const auto binary = imagefs::init::default_init_binary();
    init_bytes.assign(reinterpret_cast<const char*>(binary.data()), binary.size());
    if (with_exec) options.exec = std::vector<std::string>{"/agent", in.bytes(in.byte() % 8)};
  } else {
    init_bytes = in.bytes(in.byte());
    options.init = env.dir.path() / "init";
    spit(*options.init, init_bytes);
  }
  std::string inject_guest;
  std::string inject_bytes;
  if (with_inject) {
    // Somewhere in the image: replacing an entry, beside one, or under a new directory.
    std::string where = "opt/agent";
    if (!chosen.empty()) {
      const Chosen& c = chosen[in.byte() % chosen.size()];
      const uint8_t how = in.byte() % 3;
      where = how == 0 ? c.tar.name : how == 1 ? c.tar.name + "/agent" : c.tar.name + "/new/agent";
    }
    // Not where /init or its config go: such options collide with them (reported, not fuzzed).
    if (where == "init" || where == ".imagefs" || where.starts_with(".imagefs/"))
      where = "opt/agent";
    inject_guest = "/" + where;
    inject_bytes = in.bytes(in.byte());
    const fs::path host = env.dir.path() / "inject";
    spit(host, inject_bytes);
    options.injects.push_back({host, inject_guest});
  }

  // The "manifest" names everything the archive is made of: the whole input.
  const imagefs::cpio::ImageSource image{imagefs::store::Digest::of(whole_input),
                                         std::string(config_json)};
  auto made = env.maker->make(image, tree, options);
  if (verbose()) {
    std::fprintf(stderr, "round trip: format %d, %zu entries, %s init, exec %d, inject %s: %s\n",
                 static_cast<int>(format), chosen.size(), default_init ? "default" : "file",
                 with_exec ? 1 : 0, inject_guest.c_str(),
                 made.ok() ? ("archive of " + std::to_string((*made)->size()) + " bytes, " +
                              std::to_string((*made)->stats().segments) + " segments")
                                 .c_str()
                           : made.error().message.c_str());
  }
  if (!made.ok()) {
    const int code = made.error().code;
    CHECK(!made.error().message.empty());
    // The only refusals: a config the default /init cannot use (its Entrypoint or Cmd, which
    // --exec makes irrelevant), an injected file under a non-directory, a path that is not UTF-8
    // (a plan records guest paths as JSON).
    // A file named .imagefs in the image leaves no place for /.imagefs/init.conf: ENOTDIR.
    bool imagefs_file = false;
    for (const Chosen& c : chosen) imagefs_file |= c.tar.name == ".imagefs" && c.type != S_IFDIR;
    if (code == EIO) {
      CHECK(default_init && !with_exec && config_json == kConfigs[2]);
    } else if (code == ENOTDIR) {
      CHECK(with_inject || (default_init && imagefs_file));
    } else {
      // A guest path that is not UTF-8 (a plan records them as JSON); an --exec argument with a
      // NUL, which no argv string can hold.
      bool nul = false;
      if (options.exec)
        for (const std::string& arg : *options.exec) nul |= arg.find('\0') != std::string::npos;
      CHECK(code == EINVAL && (with_inject || nul));
    }
    return;
  }
  CHECK(!(default_init && !with_exec && config_json == kConfigs[2]));
  if (options.exec)
    for (const std::string& arg : *options.exec) CHECK(arg.find('\0') == std::string::npos);
  const Archive& archive = **made;
  // Reads of the chosen size, but not so small that 800 KB of /init take a million of them.
  const std::string bytes =
      read_all(archive, std::max<size_t>(chunk, static_cast<size_t>(archive.size() / 1024)));
  std::vector<uint64_t> ends;  // where each member or frame ends in the raw stream
  std::string raw;
  switch (format) {
    case Format::none:
      raw = bytes;
      break;
    case Format::gzip:
      raw = gunzip(bytes, ends);
      break;
    case Format::zstd:
      raw = unzstd(bytes, ends);
      break;
  }
  CHECK(raw.size() == archive.stats().raw_bytes);
  const std::vector<NewcEntry> entries = parse_newc(raw);
  if (verbose()) {
    for (const NewcEntry& e : entries) {
      std::fprintf(stderr, "  %06o %u:%u nlink %u size %u %s\n", e.mode, e.uid, e.gid, e.nlink,
                   e.filesize, printable_name(e.name).c_str());
    }
  }
  std::set<uint64_t> boundaries = {0};
  for (const NewcEntry& e : entries) boundaries.insert(e.end);
  for (uint64_t end : ends) CHECK(boundaries.count(end) != 0);

  // What replaced the image's entries, and what the tail adds.
  const std::string inject_name = inject_guest.empty() ? "" : inject_guest.substr(1);
  auto replaced = [&](const std::string& name) {
    auto under = [&](const std::string& x) {
      return !x.empty() && (name == x || (name.starts_with(x) && name[x.size()] == '/'));
    };
    // The image's own top-level TRAILER!!!: left out (the kernel would take it for the end).
    return under("init") || under(inject_name) || under("TRAILER!!!") ||
           (default_init && under(std::string(imagefs::init::kConfigPath.substr(1))));
  };

  // The kernel's rules.
  std::map<std::string, const NewcEntry*> by_name;
  std::map<std::tuple<uint32_t, uint32_t, uint32_t, uint32_t>, std::vector<const NewcEntry*>>
      groups;
  for (const NewcEntry& e : entries) {
    if (e.name == "TRAILER!!!") break;
    CHECK(by_name.emplace(e.name, &e).second);
    const uint32_t type = e.mode & S_IFMT;
    if (e.name == ".") {
      CHECK(&e == &entries.front() && type == S_IFDIR);
    } else {
      const size_t slash = e.name.rfind('/');
      CHECK(e.name.front() != '/');
      if (slash != std::string::npos) {
        auto parent = by_name.find(e.name.substr(0, slash));
        CHECK(parent != by_name.end());
        const uint32_t ptype = parent->second->mode & S_IFMT;
        // A directory, or, for a file of the tail (injected, or the default /init's config) and
        // the parents made for it, a symlink of the image, which the kernel follows (as docker
        // follows one for a volume's mount point).
        auto tail_path = [&](const std::string& path) {
          return !path.empty() &&
                 (e.name == path || (path.starts_with(e.name) && path[e.name.size()] == '/'));
        };
        CHECK(ptype == S_IFDIR ||
              (ptype == S_IFLNK &&
               (tail_path(inject_name) ||
                (default_init && tail_path(std::string(imagefs::init::kConfigPath.substr(1)))))));
      }
    }
    if (type == S_IFDIR || type == S_IFCHR || type == S_IFBLK || type == S_IFIFO)
      CHECK(e.filesize == 0);
    if (type == S_IFLNK) CHECK(e.filesize > 0);
    if (type == S_IFDIR) {
      CHECK(e.nlink == 2);
    } else if (e.nlink >= 2) {
      CHECK(type == S_IFREG && e.devmajor == 1);
      groups[{e.ino, e.devmajor, e.devminor, type}].push_back(&e);
    } else {
      CHECK(e.nlink == 1 && e.devmajor == 0);
    }
  }
  // A group whose member /init or the injected file replaced keeps the image's link count (a hint
  // the kernel does not need).
  bool any_replaced = false;
  for (const Chosen& c : chosen) any_replaced |= replaced(c.tar.name);
  for (const auto& [key, members] : groups) {
    CHECK(members.size() <= members.front()->nlink);
    if (!any_replaced) CHECK(members.size() == members.front()->nlink);
    for (size_t i = 1; i < members.size(); ++i) {
      CHECK(members[i]->nlink == members.front()->nlink && members[i]->filesize == 0);
    }
  }
  // The bytes of a regular entry: its own, or its group's first member's.
  auto content_of = [&](const NewcEntry& e) -> const std::string& {
    if (e.nlink >= 2) return groups[{e.ino, e.devmajor, e.devminor, e.mode & S_IFMT}][0]->data;
    return e.data;
  };

  // Every entry of the tree, as the tree says, but what is replaced.
  std::set<std::string> from_tree;
  CHECK(tree.walk([&](const imagefs::overlay::WalkEntry& w) -> Result<void> {
              const std::string name = w.path.empty() ? "." : w.path;
              if (replaced(name)) return {};
              from_tree.insert(name);
              auto it = by_name.find(name);
              CHECK(it != by_name.end());
              const NewcEntry& e = *it->second;
              const auto& a = w.attr;
              CHECK(e.mode == a.mode && e.uid == a.uid && e.gid == a.gid);
              CHECK(e.mtime == clamp_mtime(a.mtime_sec));
              switch (a.mode & S_IFMT) {
                case S_IFCHR:
                case S_IFBLK:
                  CHECK(e.rdevmajor == a.rdev_major && e.rdevminor == a.rdev_minor);
                  break;
                case S_IFLNK:
                  CHECK(e.data == *tree.readlink(a.ino));
                  break;
                case S_IFREG: {
                  std::string content(a.size, '\0');
                  auto n = tree.read(a.ino, 0,
                                     std::span<uint8_t>(reinterpret_cast<uint8_t*>(content.data()),
                                                        content.size()));
                  CHECK(n.ok() && *n == a.size);
                  CHECK(content_of(e) == content);
                  CHECK((e.nlink >= 2) == (a.nlink >= 2));
                  if (e.nlink >= 2) CHECK(e.nlink == a.nlink);
                  break;
                }
                default:
                  break;
              }
              return {};
            })
            .ok());

  // Every entry the input chose, as chosen.
  for (const Chosen& c : chosen) {
    if (replaced(c.tar.name)) continue;
    auto it = by_name.find(c.tar.name);
    CHECK(it != by_name.end());
    const NewcEntry& e = *it->second;
    CHECK((e.mode & S_IFMT) == c.type);
    const Chosen* meta = &c;  // a hardlink has its target's metadata
    if (!c.tar.hardlink.empty()) {
      for (const Chosen& t : chosen)
        if (t.tar.name == c.tar.hardlink) meta = &t;
    }
    CHECK((e.mode & 07777) == meta->tar.perm);
    CHECK(e.uid == meta->tar.uid && e.gid == meta->tar.gid);
    CHECK(e.mtime == clamp_mtime(meta->tar.mtime));
    if (c.type == S_IFREG) CHECK(content_of(e) == c.content);
    if (c.type == S_IFLNK) CHECK(e.data == c.content);
    if (c.type == S_IFCHR || c.type == S_IFBLK)
      CHECK(e.rdevmajor == meta->tar.rdev_major && e.rdevminor == meta->tar.rdev_minor);
  }

  // The rest: /init, its config, the injected file and the parents it needed, /dev/console.
  for (const auto& [name, e] : by_name) {
    if (from_tree.count(name) != 0) continue;
    if (name == "init") {
      CHECK(e->mode == (S_IFREG | 0755) && e->uid == 0 && e->gid == 0 && e->data == init_bytes);
    } else if (default_init && name == imagefs::init::kConfigPath.substr(1)) {
      CHECK(e->mode == (S_IFREG | 0644));
      auto config = imagefs::init::decode_config(e->data);
      CHECK(config.ok());
      auto expected = imagefs::init::init_config_from_image(config_json, options.exec);
      CHECK(expected.ok() && *config == *expected);
    } else if (name == inject_name) {
      CHECK(e->mode == (S_IFREG | 0755) && e->data == inject_bytes);
    } else if (name == "dev/console") {
      CHECK(e->mode == (S_IFCHR | 0600) && e->rdevmajor == 5 && e->rdevminor == 1);
    } else {
      // A parent made for the tail: /dev, /.imagefs, or one of the injected file's.
      CHECK(e->mode == (S_IFDIR | 0755));
      CHECK(name == "dev" || (default_init && name == ".imagefs") ||
            (inject_name.starts_with(name) && inject_name[name.size()] == '/'));
    }
  }
  CHECK(by_name.count("init") == 1);
  if (!inject_name.empty()) CHECK(by_name.count(inject_name) == 1);
}

// --- the reader, from a plan record ------------------------------------------------------------

void plan_reader(uint8_t format_byte, std::string_view record) {
  Env env;
  const Format format = std::array{Format::none, Format::gzip, Format::zstd}[format_byte % 3];
  ArchiveOptions options;
  options.format = format;
  options.init = env.dir.path() / "init";  // the key depends on the file's identity only
  spit(*options.init, "#!/bin/sh\n");
  struct stat st {};
  CHECK(::stat(options.init->c_str(), &st) == 0);
  const auto manifest = imagefs::store::Digest::of(record);
  const int level = format == Format::gzip   ? options.gzip_level
                    : format == Format::zstd ? options.zstd_level
                                             : 0;
  const std::string key = imagefs::cpio::detail::plan_key(manifest, options, level, {st});

  // The record behind a right key line and checksum, so the parser gets past them.
  std::string text = key + "\n" + std::string(record) + "\n";
  text += std::string(imagefs::store::Digest::of(text).hex()) + "\n";
  CHECK(imagefs::store::replace_shared(env.blobs->root(), "plans",
                                       imagefs::store::Digest::of(key).hex(), text)
            .ok());
  // Its segments, as large as it says (within reason), each of bytes of its own.
  std::string expected;
  auto plan = imagefs::cpio::detail::read_plan(env.blobs->root(), key);
  CHECK(plan.ok());
  bool complete = plan->has_value();
  uint64_t total = 0;
  if (*plan) {
    std::map<std::string, uint64_t> sizes;
    for (const auto& s : (*plan)->segments) {
      auto [it, fresh] = sizes.emplace(s.key, s.compressed);
      if (!fresh && it->second != s.compressed) complete = false;  // one file, two sizes
      total += s.compressed;
    }
    if (total > (1u << 20) || sizes.size() > 64) complete = false;
    if (complete) {
      for (const auto& [name, size] : sizes) {
        const fs::path path = imagefs::cpio::detail::segment_path(env.blobs->root(), format, name);
        fs::create_directories(path.parent_path());
        spit(path, pattern(size, static_cast<uint32_t>(std::hash<std::string>{}(name))));
      }
      for (const auto& s : (*plan)->segments) {
        expected += pattern(s.compressed, static_cast<uint32_t>(std::hash<std::string>{}(s.key)));
      }
    }
  }
  auto archive = env.maker->cached(manifest, options);
  CHECK(archive.ok());
  if (verbose()) {
    std::fprintf(stderr, "plan: %s, %zu segments, %zu bytes, served: %d\n",
                 *plan ? "parsed" : "refused", *plan ? (*plan)->segments.size() : 0,
                 expected.size(), *archive != nullptr ? 1 : 0);
  }
  if (!complete) return;
  CHECK(*archive != nullptr);
  CHECK((*archive)->size() == expected.size());
  CHECK(read_all(**archive, 1 + expected.size() / 3) == expected);
  // Reads at other offsets, of other lengths.
  for (uint64_t i = 1; i < 8 && !expected.empty(); ++i) {
    const uint64_t at = expected.size() * i / 8;
    std::string part(std::min<size_t>(i * 4099 % 70000, expected.size() - at), '\0');
    auto n = (*archive)->read(
        at, std::span<uint8_t>(reinterpret_cast<uint8_t*>(part.data()), part.size()));
    CHECK(n.ok() && *n == part.size() && part == expected.substr(at, part.size()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] == 'P') {  // "P<format byte><plan record JSON>"
    if (size >= 2)
      plan_reader(data[1], std::string_view(reinterpret_cast<const char*>(data) + 2, size - 2));
    return 0;
  }
  Input in(data + 1, size - 1);
  round_trip(in, std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
