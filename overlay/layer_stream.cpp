// A layer blob as the byte stream of its tar: compression from the magic bytes, strict ISA-L (gzip)
// and libzstd streaming decompression, and the blob digest and diff_id hashed on the way. We
// decompress here rather than through libarchive's filters because those cannot be made strict
// (libarchive's gzip reader ignores what follows the last member) and do not hand back the
// uncompressed bytes to hash.
#include "overlay/layer_stream.h"

#include <fcntl.h>
#include <isa-l/igzip_lib.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>

#include "common/errno_error.h"
#include "common/unique_fd.h"

namespace imagefs::overlay::detail {

namespace fs = std::filesystem;

namespace {

constexpr size_t kReadChunk = size_t{1} << 20;  // compressed bytes per read(2)
constexpr size_t kOutChunk = size_t{1} << 20;   // uncompressed bytes per read()

bool starts_with(std::span<const uint8_t> head, std::initializer_list<uint8_t> magic) {
  return head.size() >= magic.size() && std::equal(magic.begin(), magic.end(), head.begin());
}

std::string hex_bytes(std::span<const uint8_t> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : bytes) {
    if (!out.empty()) out += ' ';
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

// The blob file, read in large chunks, every byte hashed (the blob's digest) and counted; or not
// hashed when the store's writer verified this very file a moment ago.
class BlobReader {
 public:
  BlobReader(UniqueFd fd, const store::LayerRecord& layer, const IngestProgress* progress,
             bool verified)
      : fd_(std::move(fd)),
        buffer_(kReadChunk),
        layer_(layer),
        progress_(progress),
        verified_(verified ? std::optional<Result<void>>(Result<void>()) : std::nullopt) {}

  // The next chunk; empty at the end of the file.
  Result<std::span<const uint8_t>> next() {
    if (eof_) return std::span<const uint8_t>();
    for (;;) {
      ssize_t n = ::read(fd_.get(), buffer_.data(), buffer_.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno_error(errno, "cannot read the blob of layer", layer_.digest.str());
      if (n == 0) {
        eof_ = true;
        return std::span<const uint8_t>();
      }
      std::span<const uint8_t> got(buffer_.data(), static_cast<size_t>(n));
      if (!verified_) hash_.update(got);
      consumed_ += got.size();
      if (progress_ != nullptr && progress_->update) progress_->update(layer_.digest, consumed_);
      return got;
    }
  }

  // Reads (and hashes) the rest of the file, then compares its digest. EUCLEAN on a mismatch.
  // Once: later calls give the first one's answer.
  Result<void> verify() {
    if (!verified_) verified_ = compare();
    return *verified_;
  }

  [[nodiscard]] uint64_t consumed() const { return consumed_; }

 private:
  Result<void> compare() {
    for (;;) {
      IMAGEFS_TRY(chunk, next());
      if (chunk.empty()) break;
    }
    store::Digest actual = hash_.finish();
    if (actual != layer_.digest) return rotten_blob(layer_.digest, actual);
    return {};
  }

  UniqueFd fd_;
  std::vector<uint8_t> buffer_;
  const store::LayerRecord& layer_;
  const IngestProgress* progress_;
  store::Sha256 hash_;
  uint64_t consumed_ = 0;
  bool eof_ = false;
  std::optional<Result<void>> verified_;
};

class StreamBase : public LayerStream {
 public:
  StreamBase(std::unique_ptr<BlobReader> blob, const store::LayerRecord& layer,
             Compression compression)
      : blob_(std::move(blob)), layer_(layer), compression_(compression) {}

  [[nodiscard]] Compression compression() const override { return compression_; }

  Result<store::Digest> finish() override {
    for (;;) {
      auto chunk = read();
      if (!chunk.ok()) return explain(chunk.error());
      if (chunk->empty()) break;
    }
    IMAGEFS_CHECK(blob_->verify());
    return diff_id();
  }

  Error explain(Error failure) override {
    if (failure.code == EUCLEAN) return failure;
    Result<void> sound = blob_->verify();
    if (!sound.ok() && sound.error().code == EUCLEAN) return sound.error();
    return failure;
  }

  // What was decoded before an error is handed out first, and the error at the next call: the
  // consumer then fails where the damage is (in which tar entry), not up to a chunk earlier.
  Result<std::span<const uint8_t>> read() final {
    if (pending_) return *pending_;
    Result<std::span<const uint8_t>> got = decode();
    if (got.ok() || decoded().empty()) return got;
    pending_ = got.error();
    return decoded();
  }

  [[nodiscard]] bool failed_after_the_stream() const override { return after_the_end_; }

 protected:
  virtual store::Digest diff_id() = 0;
  // The next piece of the stream (read()'s contract), and the bytes a failed decode() produced.
  virtual Result<std::span<const uint8_t>> decode() = 0;
  [[nodiscard]] virtual std::span<const uint8_t> decoded() const = 0;

  Error bad(const std::string& what) const {
    return make_error(EIO, "layer " + layer_.digest.str() + ": " + what);
  }

  std::unique_ptr<BlobReader> blob_;
  const store::LayerRecord& layer_;
  const Compression compression_;
  std::optional<Error> pending_;
  bool after_the_end_ = false;  // the error is about bytes after the compressed stream
};

// An uncompressed tar: the blob's bytes are the stream, and its digest is the diff_id.
class PlainStream final : public StreamBase {
 public:
  PlainStream(std::unique_ptr<BlobReader> blob, const store::LayerRecord& layer,
              std::span<const uint8_t> first)
      : StreamBase(std::move(blob), layer, Compression::none), first_(first) {}

 protected:
  Result<std::span<const uint8_t>> decode() override {
    if (!first_.empty()) return std::exchange(first_, {});
    return blob_->next();
  }
  [[nodiscard]] std::span<const uint8_t> decoded() const override { return {}; }
  // verify() has compared the same hash with the blob's digest: they are equal.
  store::Digest diff_id() override { return layer_.digest; }

 private:
  std::span<const uint8_t> first_;
};

// gzip: one member or several back to back (RFC 1952 allows it; pigz and `cat a.gz b.gz` make
// them), each with its CRC-32 and ISIZE trailer checked; nothing else may follow. Inflated by
// Intel's ISA-L, about twice as fast as zlib on the same layers (docs/BENCHMARKS.md).
class GzipStream final : public StreamBase {
 public:
  GzipStream(std::unique_ptr<BlobReader> blob, const store::LayerRecord& layer,
             std::span<const uint8_t> first)
      : StreamBase(std::move(blob), layer, Compression::gzip), out_(kOutChunk) {
    in_ = first;
  }

  Result<void> init() {
    // The state holds ISA-L's whole window (~100 KiB): on the heap, set up for each member.
    state_ = std::make_unique<inflate_state>();
    return {};
  }

  Result<std::span<const uint8_t>> decode() override {
    inflate_state& z = *state_;
    produced_ = 0;
    while (produced_ < out_.size() && !done_) {
      if (in_.empty()) {
        IMAGEFS_TRY(chunk, blob_->next());
        in_ = chunk;
        if (in_.empty()) {
          if (!member_open_) {
            done_ = true;  // the blob ends after a complete member
            break;
          }
          if (after_the_stream()) return garbage("the blob ends");
          return bad("the gzip stream is truncated: the blob ends inside member " +
                     std::to_string(members_ + 1) + " (after " + std::to_string(blob_->consumed()) +
                     " bytes)");
        }
      }
      if (!member_open_) {
        // A member starts here: the first, or one after the end of another.
        isal_inflate_init(&z);
        z.crc_flag = ISAL_GZIP;  // parse the gzip header, check the CRC-32 and ISIZE trailer
        member_open_ = true;
        member_start_ = offset();
        member_out_ = 0;
        head_.clear();
        tail_len_ = 0;
      }
      // The member's first two bytes (which may straddle two reads), to tell a member that went
      // wrong from bytes that are no member at all.
      for (size_t i = 0; head_.size() < 2 && i < in_.size(); ++i) head_.push_back(in_[i]);
      const size_t in_size = std::min<size_t>(in_.size(), std::numeric_limits<uint32_t>::max());
      z.next_in = const_cast<uint8_t*>(in_.data());
      z.avail_in = static_cast<uint32_t>(in_size);
      z.next_out = out_.data() + produced_;
      z.avail_out = static_cast<uint32_t>(out_.size() - produced_);
      uint8_t* const out_at = z.next_out;
      const int r = isal_inflate(&z);
      // What was consumed and produced, from the pointers: after an error ISA-L leaves avail_in
      // and avail_out unreliable (a fuzzer found avail_in = 2^32 - 1).
      const uint8_t* const in_at = in_.data();
      if (z.next_in < in_at || z.next_in > in_at + in_size || z.next_out < out_at ||
          z.next_out > out_.data() + out_.size())
        return bad("corrupt gzip data in member " + std::to_string(members_ + 1) + " (near byte " +
                   std::to_string(offset()) + " of the blob): " +
                   (r < 0 ? reason(r, z.block_state) : "the decompressor left its buffers"));
      const auto used = static_cast<size_t>(z.next_in - in_at);
      const auto made = static_cast<size_t>(z.next_out - out_at);
      keep_tail(in_.first(used));
      in_ = in_.subspan(used);
      member_out_ += made;
      produced_ += made;
      if (r == ISAL_DECOMP_OK || r == ISAL_END_INPUT) {
        if (z.block_state == ISAL_BLOCK_FINISH) {
          member_open_ = false;
          ++members_;
        } else if (used == 0 && made == 0 && !in_.empty()) {
          // Input to read and room to write, yet nothing done: never loop on it.
          return bad("corrupt gzip data in member " + std::to_string(members_ + 1) +
                     " (near byte " + std::to_string(offset()) +
                     " of the blob): the decompressor makes no progress");
        }
        continue;
      }
      if (after_the_stream()) return garbage(reason(r, z.block_state));
      return bad("corrupt gzip data in member " + std::to_string(members_ + 1) + " (near byte " +
                 std::to_string(offset()) + " of the blob): " + reason(r, z.block_state));
    }
    std::span<const uint8_t> got(out_.data(), produced_);
    diff_.update(got);
    return got;
  }

 protected:
  store::Digest diff_id() override { return diff_.finish(); }
  [[nodiscard]] std::span<const uint8_t> decoded() const override {
    return {out_.data(), produced_};
  }

 private:
  // The blob offset of in_'s first byte.
  [[nodiscard]] uint64_t offset() const { return blob_->consumed() - in_.size(); }

  // The last 8 bytes the open member has consumed: after a failed trailer check, its CRC-32 and
  // ISIZE, to say which of the two is wrong.
  void keep_tail(std::span<const uint8_t> used) {
    for (uint8_t b : used.last(std::min<size_t>(used.size(), tail_.size()))) {
      if (tail_len_ == tail_.size()) {
        std::memmove(tail_.data(), tail_.data() + 1, tail_.size() - 1);
        --tail_len_;
      }
      tail_[tail_len_++] = b;
    }
  }

  [[nodiscard]] std::string reason(int r, isal_block_state state) const {
    switch (r) {
      case ISAL_INVALID_BLOCK:
        return "invalid deflate block";
      case ISAL_INVALID_SYMBOL:
        return "invalid deflate code";
      case ISAL_INVALID_LOOKBACK:
        return "invalid distance too far back";
      case ISAL_INVALID_WRAPPER:
        return "incorrect header check";
      case ISAL_UNSUPPORTED_METHOD:
        return "unknown compression method";
      case ISAL_INCORRECT_CHECKSUM:
        // Not after the deflate data: the header's own CRC-16 (FHCRC).
        if (state != ISAL_BLOCK_INPUT_DONE && state != ISAL_BLOCK_FINISH &&
            state != ISAL_CHECKSUM_CHECK)
          return "incorrect header crc: the CRC-16 of the gzip member's header does not match it";
        if (tail_len_ == tail_.size() &&
            load_le32(tail_.data() + 4) != static_cast<uint32_t>(member_out_))
          return "incorrect length check: the length in the trailer of the gzip member does not "
                 "match its content";
        return "incorrect data check: the CRC-32 in the trailer of the gzip member does not match "
               "its content";
      default:
        return "ISA-L inflate error " + std::to_string(r);
    }
  }

  static uint32_t load_le32(const uint8_t* p) {
    return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
  }

  // Whether the open "member" is bytes after the last member rather than one: it follows a
  // member, has produced nothing, and does not start with the gzip magic bytes.
  [[nodiscard]] bool after_the_stream() const {
    return members_ > 0 && member_out_ == 0 &&
           !(head_.size() == 2 && head_[0] == 0x1f && head_[1] == 0x8b);
  }
  Error garbage(const std::string& why) {
    after_the_end_ = true;
    return bad("garbage after the gzip stream: " + std::to_string(members_) +
               (members_ == 1 ? " member ends" : " members end") + " at byte " +
               std::to_string(member_start_) + " of the blob, and what follows is not a " +
               "gzip member (" + why + ")");
  }

  std::unique_ptr<inflate_state> state_;
  std::vector<uint8_t> out_;
  size_t produced_ = 0;  // bytes of out_ the current decode() has filled
  std::span<const uint8_t> in_;
  store::Sha256 diff_;
  uint64_t members_ = 0;       // complete members
  bool member_open_ = false;   // inside a member
  uint64_t member_start_ = 0;  // blob offset where the open member (or the last one) started
  uint64_t member_out_ = 0;    // bytes the open member has produced
  std::vector<uint8_t> head_;  // the open member's first bytes (2 at most)
  std::array<uint8_t, 8> tail_{};
  size_t tail_len_ = 0;
  bool done_ = false;
};

struct DctxFree {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

// zstd: frames back to back (skippable frames included), each checked by libzstd (its content
// checksum when it has one); nothing else may follow the last one.
class ZstdStream final : public StreamBase {
 public:
  ZstdStream(std::unique_ptr<BlobReader> blob, const store::LayerRecord& layer,
             std::span<const uint8_t> first)
      : StreamBase(std::move(blob), layer, Compression::zstd), out_(kOutChunk) {
    in_ = first;
  }

  Result<void> init() {
    d_.reset(ZSTD_createDCtx());
    if (!d_) return make_error(ENOMEM, "cannot set up zstd to read layer " + layer_.digest.str());
    return {};
  }

  Result<std::span<const uint8_t>> decode() override {
    ZSTD_outBuffer& out = out_buffer_;
    out = {out_.data(), out_.size(), 0};
    while (out.pos < out.size && !done_) {
      if (in_.empty()) {
        IMAGEFS_TRY(chunk, blob_->next());
        in_ = chunk;
      }
      if (in_.empty() && frame_done_) {
        done_ = true;  // the blob ends after a complete frame
        break;
      }
      // in_ is empty here only at the end of the blob inside a frame: a call may still flush
      // output libzstd holds, and one that cannot means the frame is cut short.
      std::span<const uint8_t> at = in_;
      // The first bytes after a frame (which may straddle two reads), to tell a frame that went
      // wrong from bytes that are no frame at all.
      if (frames_ > 0)
        for (size_t i = 0; head_.size() < 4 && i < in_.size(); ++i) head_.push_back(in_[i]);
      ZSTD_inBuffer in{in_.data(), in_.size(), 0};
      size_t before = out.pos;
      size_t r = ZSTD_decompressStream(d_.get(), &out, &in);
      in_ = in_.subspan(in.pos);
      if (ZSTD_isError(r)) {
        std::string why = ZSTD_getErrorName(r);
        if (frames_ > 0 && !is_frame_start(head_)) return garbage(why);
        return bad("corrupt zstd data in frame " + std::to_string(frames_ + 1) + " (near byte " +
                   std::to_string(offset()) + " of the blob): " + why);
      }
      if (r == 0) {
        // A frame (or a skippable frame) is complete and flushed.
        ++frames_;
        frame_done_ = true;
        frame_end_ = offset();
        head_.clear();
        continue;
      }
      frame_done_ = false;
      if (at.empty() && out.pos == before) {
        if (frames_ > 0 && !is_frame_start(head_)) return garbage("the blob ends");
        return bad("the zstd stream is truncated: the blob ends inside frame " +
                   std::to_string(frames_ + 1) + " (after " + std::to_string(blob_->consumed()) +
                   " bytes)");
      }
    }
    std::span<const uint8_t> got(out_.data(), out.pos);
    diff_.update(got);
    return got;
  }

 protected:
  store::Digest diff_id() override { return diff_.finish(); }
  [[nodiscard]] std::span<const uint8_t> decoded() const override {
    return {out_.data(), out_buffer_.pos};
  }

 private:
  [[nodiscard]] uint64_t offset() const { return blob_->consumed() - in_.size(); }

  Error garbage(const std::string& why) {
    after_the_end_ = true;
    return bad("garbage after the zstd stream: " + std::to_string(frames_) +
               (frames_ == 1 ? " frame ends" : " frames end") + " at byte " +
               std::to_string(frame_end_) + " of the blob, and what follows is not a zstd frame (" +
               why + ")");
  }

  // Whether `bytes` (where a frame should start) start like one; fewer than 4 bytes cannot.
  static bool is_frame_start(std::span<const uint8_t> bytes) {
    if (bytes.size() < 4) return false;
    return starts_with(bytes, {0x28, 0xb5, 0x2f, 0xfd}) ||
           ((bytes[0] & 0xf0) == 0x50 && bytes[1] == 0x2a && bytes[2] == 0x4d && bytes[3] == 0x18);
  }

  std::unique_ptr<ZSTD_DCtx, DctxFree> d_;
  std::vector<uint8_t> out_;
  ZSTD_outBuffer out_buffer_{nullptr, 0, 0};
  std::span<const uint8_t> in_;
  store::Sha256 diff_;
  uint64_t frames_ = 0;        // complete frames
  bool frame_done_ = false;    // the last frame is complete and nothing of another has been read
  uint64_t frame_end_ = 0;     // blob offset where the last complete frame ends
  std::vector<uint8_t> head_;  // the first bytes after it (4 at most)
  bool done_ = false;
};

}  // namespace

const char* compression_name(Compression c) {
  switch (c) {
    case Compression::none:
      return "uncompressed tar";
    case Compression::gzip:
      return "gzip";
    case Compression::zstd:
      return "zstd";
  }
  return "?";
}

Result<Compression> detect_compression(std::span<const uint8_t> head, const store::Digest& layer) {
  if (starts_with(head, {0x1f, 0x8b})) return Compression::gzip;
  if (starts_with(head, {0x28, 0xb5, 0x2f, 0xfd})) return Compression::zstd;
  // A skippable frame: magic 0x184D2A50 to 0x184D2A5F, little-endian (RFC 8878, 3.1.2).
  if (head.size() >= 8 && (head[0] & 0xf0) == 0x50 && head[1] == 0x2a && head[2] == 0x4d &&
      head[3] == 0x18)
    return Compression::zstd;
  // A tar header block: its first name may start with any bytes ("BZh/"), its magic cannot.
  constexpr size_t kTarMagicAt = 257;
  constexpr std::string_view kTarMagic = "ustar";
  if (head.size() >= kTarMagicAt + kTarMagic.size() &&
      std::equal(kTarMagic.begin(), kTarMagic.end(), head.begin() + kTarMagicAt))
    return Compression::none;
  const char* refused = nullptr;
  if (starts_with(head, {0xfd, '7', 'z', 'X', 'Z', 0x00})) refused = "xz";
  if (starts_with(head, {'B', 'Z', 'h'})) refused = "bzip2";
  if (starts_with(head, {0x04, 0x22, 0x4d, 0x18})) refused = "lz4";
  if (refused != nullptr)
    return make_error(ENOTSUP, "layer " + layer.str() + " is " + refused +
                                   "-compressed (by its magic bytes " +
                                   hex_bytes(head.subspan(0, std::min<size_t>(head.size(), 6))) +
                                   "): a layer may be an uncompressed tar, gzip or zstd");
  return Compression::none;
}

std::optional<Compression> media_type_compression(std::string_view media_type) {
  auto ends = [&](std::string_view suffix) { return media_type.ends_with(suffix); };
  if (ends("+gzip") || ends(".tar.gzip")) return Compression::gzip;
  if (ends("+zstd") || ends(".tar.zstd")) return Compression::zstd;
  if (ends(".tar")) return Compression::none;
  return std::nullopt;
}

Error rotten_blob(const store::Digest& blob, const store::Digest& actual) {
  return make_error(EUCLEAN, "blob " + blob.str() +
                                 " in the store does not match its digest: the disk changed it "
                                 "(its bytes hash to " +
                                 actual.str() + ")");
}

Result<std::unique_ptr<LayerStream>> LayerStream::open(const fs::path& blob,
                                                       const store::LayerRecord& layer,
                                                       const IngestProgress* progress,
                                                       const store::BlobStore* store) {
  UniqueFd fd(::open(blob.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT)
      return make_error(ENOENT, "layer " + layer.digest.str() + " is not in the store");
    return errno_error(errno, "cannot open layer blob", blob);
  }
  (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);  // a hint only
  const bool verified = store != nullptr && store->verified_just_now(layer.digest, fd.get());
  auto reader = std::make_unique<BlobReader>(std::move(fd), layer, progress, verified);
  IMAGEFS_TRY(first, reader->next());
  auto compression =
      detect_compression(first.subspan(0, std::min<size_t>(first.size(), 512)), layer.digest);
  if (!compression.ok()) {
    // A rotten blob may look like anything: say that rather than what its first bytes became.
    Result<void> sound = reader->verify();
    if (!sound.ok()) return sound.error();
    return compression.error();
  }
  std::optional<Compression> labelled = media_type_compression(layer.media_type);
  if (labelled && *labelled != *compression && progress != nullptr && progress->notice)
    progress->notice("layer " + layer.digest.str() + ": its media type " + layer.media_type +
                     " says " + compression_name(*labelled) + ", but the blob is " +
                     compression_name(*compression) + " by its magic bytes: read as " +
                     compression_name(*compression) + ", as docker does");
  switch (*compression) {
    case Compression::none:
      return std::unique_ptr<LayerStream>(
          std::make_unique<PlainStream>(std::move(reader), layer, first));
    case Compression::gzip: {
      auto s = std::make_unique<GzipStream>(std::move(reader), layer, first);
      IMAGEFS_CHECK(s->init());
      return std::unique_ptr<LayerStream>(std::move(s));
    }
    case Compression::zstd: {
      auto s = std::make_unique<ZstdStream>(std::move(reader), layer, first);
      IMAGEFS_CHECK(s->init());
      return std::unique_ptr<LayerStream>(std::move(s));
    }
  }
  return make_error(EINVAL, "unknown compression");
}

}  // namespace imagefs::overlay::detail
