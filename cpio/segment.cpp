// Segments: their keys, the gathering of their raw bytes, their compression (libdeflate whole
// buffer, zlib streaming for very large ones, zstd) and their files under ROOT/segments/.
#include "cpio/segment.h"

#include <fcntl.h>
#include <libdeflate.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <memory>
#include <span>
#include <system_error>
#include <utility>

#include "common/errno_error.h"
#include "store/derived.h"

namespace imagefs::cpio::detail {

namespace fs = std::filesystem;

namespace {

// Segments up to this many raw bytes are compressed in one call from one buffer (libdeflate's
// compressor only works that way, and it is about 3x zlib's speed); larger ones (a single big
// file) are streamed so that memory stays bounded. The choice depends only on the raw size, so
// the same segment always gets the same bytes.
constexpr uint64_t kWholeBufferLimit = uint64_t{64} << 20;
std::atomic<uint64_t> whole_buffer_limit{kWholeBufferLimit};
constexpr size_t kChunk = size_t{1} << 20;

// v2: incompressible segments became stored gzip members (looks_incompressible()), so the bytes
// under a key changed.
constexpr std::string_view kKeyVersion = "imagefs cpio segment v2\n";

// Segments at least this large are checked for incompressible content before deflating them.
constexpr size_t kIncompressibleMin = size_t{64} << 10;

void put_u64(store::Sha256& h, uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  h.update(std::span<const uint8_t>(b, 8));
}

Result<void> write_all(int fd, const uint8_t* data, size_t size, const fs::path& path) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(errno, "cannot write", path);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return {};
}

// Produces a segment's raw bytes in order, from its pieces. Every read but the last fills the
// buffer completely, so the chunks a streaming compressor sees depend only on the segment.
class RawReader {
 public:
  explicit RawReader(const SegmentSpec& spec) : spec_(spec) {}

  // Bytes placed in `out`; 0 at the end.
  Result<size_t> read(std::span<uint8_t> out) {
    size_t filled = 0;
    while (filled < out.size() && piece_ < spec_.pieces.size()) {
      const Piece& p = spec_.pieces[piece_];
      const uint64_t left = p.size - offset_;
      const size_t want = static_cast<size_t>(std::min<uint64_t>(left, out.size() - filled));
      std::span<uint8_t> dst = out.subspan(filled, want);
      switch (p.kind) {
        case Piece::Kind::bytes:
          std::memcpy(dst.data(), p.bytes.data() + offset_, want);
          break;
        case Piece::Kind::host_file:
          std::memcpy(dst.data(), p.host->bytes.data() + offset_, want);
          break;
        case Piece::Kind::layer_content: {
          size_t got = 0;
          while (got < want) {
            IMAGEFS_TRY(n, p.layer->read(p.entry, offset_ + got, dst.subspan(got)));
            if (n == 0) {
              return make_error(EIO, "layer " + p.layer->digest().str() + ": " +
                                         std::string(p.layer->entry(p.entry).path) +
                                         " holds fewer bytes than its recorded size");
            }
            got += n;
          }
          break;
        }
      }
      filled += want;
      offset_ += want;
      if (offset_ == p.size) {
        ++piece_;
        offset_ = 0;
      }
    }
    return filled;
  }

 private:
  const SegmentSpec& spec_;
  size_t piece_ = 0;
  uint64_t offset_ = 0;
};

Result<std::vector<uint8_t>> gather(const SegmentSpec& spec) {
  std::vector<uint8_t> raw(spec.raw_size);
  RawReader reader(spec);
  IMAGEFS_TRY(n, reader.read(raw));
  if (n != raw.size()) return make_error(EIO, "segment raw size disagrees with its pieces");
  return raw;
}

struct DeflateFree {
  void operator()(libdeflate_compressor* c) const { libdeflate_free_compressor(c); }
};
struct ZstdFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};

// One libdeflate compressor per thread and level (0, stored blocks only, is used beside the
// chosen one): allocating one costs more than compressing a small segment.
libdeflate_compressor* deflate_compressor(int level) {
  thread_local std::array<std::unique_ptr<libdeflate_compressor, DeflateFree>, 13> cached;
  if (level < 0 || static_cast<size_t>(level) >= cached.size()) return nullptr;
  auto& slot = cached[static_cast<size_t>(level)];
  if (!slot) slot.reset(libdeflate_alloc_compressor(level));
  return slot.get();
}

ZSTD_CCtx* zstd_context() {
  thread_local std::unique_ptr<ZSTD_CCtx, ZstdFree> cached(ZSTD_createCCtx());
  return cached.get();
}

// 256 times the sum of the squared byte counts of `data`, next to its size squared: for bytes
// spread evenly over all 256 values the two are nearly equal (Renyi entropy of order 2 close to 8
// bits per byte), for anything a Huffman code can shorten the first is larger. Integers only, so
// the outcome is the same on every machine.
bool bytes_look_uniform(std::span<const uint8_t> data) {
  std::array<std::array<uint32_t, 256>, 4> counts{};  // four tables: no stalls on equal bytes
  size_t i = 0;
  for (; i + 4 <= data.size(); i += 4) {
    ++counts[0][data[i]];
    ++counts[1][data[i + 1]];
    ++counts[2][data[i + 2]];
    ++counts[3][data[i + 3]];
  }
  for (; i < data.size(); ++i) ++counts[0][data[i]];
  uint64_t squares = 0;
  for (size_t b = 0; b < 256; ++b) {
    const uint64_t c = uint64_t{counts[0][b]} + counts[1][b] + counts[2][b] + counts[3][b];
    squares += c * c;
  }
  // Renyi entropy >= 7.99 bits: 256 * squares <= n^2 * 2^0.01, and 2^0.01 > 1 + 1/144. With
  // n <= 64 MiB (whole-buffer segments only) nothing overflows.
  const uint64_t n = data.size();
  return 256 * squares <= n * n + n * n / 144;
}

Result<void> write_gzip_whole(const SegmentSpec& spec, int level, int fd, const fs::path& path) {
  IMAGEFS_TRY(raw, gather(spec));
  libdeflate_compressor* chosen = deflate_compressor(level);
  libdeflate_compressor* stored = deflate_compressor(0);
  if (chosen == nullptr || stored == nullptr)
    return make_error(ENOMEM, "cannot allocate a deflate compressor");
  // One output buffer, first zstd's scratch space: fresh pages cost more than the copying.
  const size_t bound = std::max({libdeflate_gzip_compress_bound(chosen, raw.size()),
                                 libdeflate_gzip_compress_bound(stored, raw.size()),
                                 ZSTD_compressBound(raw.size())});
  const std::unique_ptr<uint8_t[]> out = std::make_unique_for_overwrite<uint8_t[]>(bound);
  libdeflate_compressor* c =
      looks_incompressible(raw, std::span<uint8_t>(out.get(), bound)) ? stored : chosen;
  size_t n = libdeflate_gzip_compress(c, raw.data(), raw.size(), out.get(), bound);
  if (n == 0) return make_error(EIO, "libdeflate could not compress segment " + spec.key);
  return write_all(fd, out.get(), n, path);
}

// zlib's gzip header (windowBits 31, no deflateSetHeader) has no name, comment, extra field or
// header CRC, as the kernel's reader needs.
Result<void> write_gzip_stream(const SegmentSpec& spec, int level, int fd, const fs::path& path) {
  z_stream z{};
  if (deflateInit2(&z, std::min(level, 9), Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return make_error(ENOMEM, "cannot initialize zlib");
  struct End {
    z_stream* z;
    ~End() { deflateEnd(z); }
  } end{&z};
  RawReader reader(spec);
  std::vector<uint8_t> in(kChunk);
  std::vector<uint8_t> out(kChunk);
  while (true) {
    IMAGEFS_TRY(n, reader.read(in));
    const int flush = n < in.size() ? Z_FINISH : Z_NO_FLUSH;
    z.next_in = in.data();
    z.avail_in = static_cast<uInt>(n);
    int rc = Z_OK;
    do {
      z.next_out = out.data();
      z.avail_out = static_cast<uInt>(out.size());
      rc = deflate(&z, flush);
      if (rc == Z_STREAM_ERROR) return make_error(EIO, "zlib failed on segment " + spec.key);
      IMAGEFS_CHECK(write_all(fd, out.data(), out.size() - z.avail_out, path));
    } while (z.avail_out == 0 || (flush == Z_FINISH && rc != Z_STREAM_END));
    if (flush == Z_FINISH) return {};
  }
}

Result<void> write_zstd(const SegmentSpec& spec, int level, int fd, const fs::path& path) {
  ZSTD_CCtx* c = zstd_context();
  if (c == nullptr) return make_error(ENOMEM, "cannot allocate a zstd context");
  ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
  if (spec.raw_size <= whole_buffer_limit.load()) {
    IMAGEFS_TRY(raw, gather(spec));
    std::vector<uint8_t> out(ZSTD_compressBound(raw.size()));
    size_t n = ZSTD_compress2(c, out.data(), out.size(), raw.data(), raw.size());
    if (ZSTD_isError(n))
      return make_error(EIO,
                        std::string("zstd: ") + ZSTD_getErrorName(n) + " on segment " + spec.key);
    return write_all(fd, out.data(), n, path);
  }
  ZSTD_CCtx_setPledgedSrcSize(c, spec.raw_size);
  RawReader reader(spec);
  std::vector<uint8_t> in(kChunk);
  std::vector<uint8_t> out(ZSTD_CStreamOutSize());
  while (true) {
    IMAGEFS_TRY(n, reader.read(in));
    const bool last = n < in.size();
    ZSTD_inBuffer input{in.data(), n, 0};
    bool finished = false;
    while (!finished) {
      ZSTD_outBuffer output{out.data(), out.size(), 0};
      size_t rc = ZSTD_compressStream2(c, &output, &input, last ? ZSTD_e_end : ZSTD_e_continue);
      if (ZSTD_isError(rc))
        return make_error(
            EIO, std::string("zstd: ") + ZSTD_getErrorName(rc) + " on segment " + spec.key);
      IMAGEFS_CHECK(write_all(fd, out.data(), output.pos, path));
      finished = last ? rc == 0 : input.pos == input.size;
    }
    if (last) return {};
  }
}

Result<void> write_raw(const SegmentSpec& spec, int fd, const fs::path& path) {
  RawReader reader(spec);
  std::vector<uint8_t> buffer(static_cast<size_t>(std::min<uint64_t>(spec.raw_size, kChunk)));
  while (true) {
    IMAGEFS_TRY(n, reader.read(buffer));
    if (n == 0) return {};
    IMAGEFS_CHECK(write_all(fd, buffer.data(), n, path));
  }
}

}  // namespace

// Whether deflating `raw` would gain next to nothing (files that are compressed already, random
// bytes): deflate searches every position for matches that are not there and ends up emitting
// stored blocks anyway, at ~60 MB/s for a 1 MiB random agent. Then the segment is written as
// stored blocks at once. The check is cheap and conservative: bytes that look uniform (at the
// start, then throughout), and zstd's fastest level, which also finds repeats, saving less than
// 0.5%. It depends only on the bytes, so a segment always gets the same compressed bytes.
bool looks_incompressible(std::span<const uint8_t> raw, std::span<uint8_t> scratch) {
  if (raw.size() < kIncompressibleMin || raw.size() > kWholeBufferLimit) return false;
  if (!bytes_look_uniform(raw.first(kIncompressibleMin)) || !bytes_look_uniform(raw)) return false;
  ZSTD_CCtx* c = zstd_context();
  if (c == nullptr) return false;
  ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 1);
  const size_t n = ZSTD_compress2(c, scratch.data(), scratch.size(), raw.data(), raw.size());
  return !ZSTD_isError(n) && n >= raw.size() - raw.size() / 200;
}

std::string_view format_dir(Format format) {
  switch (format) {
    case Format::gzip:
      return "gzip";
    case Format::zstd:
      return "zstd";
    case Format::none:
      return "none";
  }
  return "none";
}

void set_whole_buffer_limit_for_tests(uint64_t bytes) {
  whole_buffer_limit.store(bytes == 0 ? kWholeBufferLimit : bytes);
}

void compute_key(SegmentSpec& spec, Format format, int level) {
  store::Sha256 h;
  h.update(kKeyVersion);
  h.update(format_dir(format));
  put_u64(h, static_cast<uint64_t>(level));
  for (const Piece& p : spec.pieces) {
    switch (p.kind) {
      case Piece::Kind::bytes:
        h.update("b");
        put_u64(h, p.bytes.size());
        h.update(p.bytes);
        break;
      case Piece::Kind::layer_content: {
        // The layer and the entry's path name the bytes whatever the index format; the offset in
        // the data file is there as well, as docs/STORE_FORMAT.md says.
        const overlay::LayerEntry e = p.layer->entry(p.entry);
        h.update("l");
        h.update(p.layer->digest().str());
        put_u64(h, e.path.size());
        h.update(e.path);
        put_u64(h, e.data_offset);
        put_u64(h, p.size);
        break;
      }
      case Piece::Kind::host_file:
        h.update("h");
        h.update(p.host->digest.str());
        put_u64(h, p.size);
        break;
    }
  }
  spec.key = std::string(h.finish().hex());
}

fs::path segment_path(const fs::path& store_root, Format format, std::string_view key) {
  return store::shared_path(store_root, format_dir(format), key);
}

Result<Built> build_segment(const fs::path& store_root, Format format, int level,
                            const SegmentSpec& spec) {
  // A segment is a shared derived file of the store (store/derived.h): built once under a lock,
  // fsynced and renamed into place, counted and removed by gc by last use.
  auto write = [&](int fd, const fs::path& tmp_path) -> Result<void> {
    Result<void> written;
    switch (format) {
      case Format::gzip:
        written = spec.raw_size <= whole_buffer_limit.load()
                      ? write_gzip_whole(spec, level, fd, tmp_path)
                      : write_gzip_stream(spec, level, fd, tmp_path);
        break;
      case Format::zstd:
        written = write_zstd(spec, level, fd, tmp_path);
        break;
      case Format::none:
        written = write_raw(spec, fd, tmp_path);
        break;
    }
    if (!written.ok()) return written.error().context("segment starting at /" + spec.first_name);
    return {};
  };
  IMAGEFS_TRY(built, store::build_shared(store_root, format_dir(format), spec.key, store::Sync::yes,
                                         write));
  return built == store::Built::now ? Built::now : Built::already;
}

}  // namespace imagefs::cpio::detail
