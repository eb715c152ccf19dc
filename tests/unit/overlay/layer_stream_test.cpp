// The byte stream of a layer, from blob to tar entries, checked as docker checks it: compression
// by magic bytes whatever the media type says, strict gzip and zstd (trailers, checksums, nothing
// after the stream; several members or frames are fine), empty streams as empty layers, the
// diff_id of the uncompressed stream kept in the index, and a blob the disk changed (EUCLEAN,
// removed from the store, nothing served from it).
#include "overlay/layer_stream.h"

#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <fstream>
#include <string>
#include <vector>

#include "overlay/layer_format.h"
#include "overlay/layer_index.h"
#include "store/derived.h"
#include "tests/unit/overlay/tar_builder.h"
#include "tests/unit/store/store_test_util.h"

namespace imagefs::overlay {
namespace {

namespace fs = std::filesystem;
using namespace testing;  // NOLINT(google-build-using-namespace): the tar builder's vocabulary
using store::testing::pattern;
using store::testing::TempDir;

using Index = std::shared_ptr<const LayerIndex>;

// One gzip member of `data` (zlib, level 6), with `header`'s fields when given.
std::string gzip(const std::string& data, gz_header* header = nullptr) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  if (header != nullptr && deflateSetHeader(&z, header) != Z_OK) std::abort();
  std::string out(deflateBound(&z, data.size()) + 256, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// One gzip member of `data` whose header carries every optional field RFC 1952 has (FEXTRA,
// FNAME, FCOMMENT, FHCRC), as `gzip -N` and some registries' tools write them.
std::string gzip_with_header_fields(const std::string& data) {
  std::string extra = "AB\x04\x00data";  // one subfield: id "AB", 4 bytes
  std::string name = "layer.tar";
  std::string comment = "made by a test";
  gz_header h{};
  h.extra = reinterpret_cast<Bytef*>(extra.data());
  h.extra_len = static_cast<uInt>(extra.size());
  h.name = reinterpret_cast<Bytef*>(name.data());
  h.comment = reinterpret_cast<Bytef*>(comment.data());
  h.hcrc = 1;
  h.os = 3;
  return gzip(data, &h);
}

// One zstd frame of `data`, with a content checksum.
std::string zstd(const std::string& data) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
  std::string out(ZSTD_compressBound(data.size()), '\0');
  size_t n = ZSTD_compress2(c, out.data(), out.size(), data.data(), data.size());
  ZSTD_freeCCtx(c);
  if (ZSTD_isError(n)) std::abort();
  out.resize(n);
  return out;
}

// A zstd skippable frame holding `payload`.
std::string skippable(const std::string& payload) {
  std::string f = {'\x53', '\x2a', '\x4d', '\x18'};
  auto n = static_cast<uint32_t>(payload.size());
  for (int i = 0; i < 4; ++i) f += static_cast<char>((n >> (8 * i)) & 0xff);
  return f + payload;
}

std::string flip(std::string s, size_t at) {
  s[at] = static_cast<char>(s[at] ^ 0x01);
  return s;
}

class Stream : public ::testing::Test {
 protected:
  void SetUp() override {
    blobs_ = store::BlobStore::open(dir_.path() / "store").value();
    cache_ = LayerCache::create(blobs_).value();
  }

  store::LayerRecord put(const std::string& blob, std::string media_type) {
    store::Digest d = store::Digest::of(blob);
    EXPECT_TRUE(blobs_->put(d, blob).ok());
    return store::LayerRecord{d, std::move(media_type), blob.size(), {}};
  }

  Result<Index> get(const std::string& blob, const char* media_type) {
    return cache_->get(put(blob, media_type), &progress_);
  }

  Index good(const std::string& blob, const char* media_type) {
    auto r = get(blob, media_type);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? *r : nullptr;
  }

  // The error of a blob that must be refused: EIO naming the blob's digest and saying `says`.
  void refused(const std::string& blob, const char* media_type, const std::string& says,
               int code = EIO) {
    auto r = get(blob, media_type);
    ASSERT_FALSE(r.ok()) << says;
    EXPECT_EQ(r.error().code, code) << r.error().message;
    EXPECT_NE(r.error().message.find(store::Digest::of(blob).str()), std::string::npos)
        << r.error().message;
    EXPECT_NE(r.error().message.find(says), std::string::npos) << r.error().message;
    // Nothing is left behind; the blob itself is sound and stays.
    EXPECT_FALSE(fs::exists(blobs_->derived_dir(store::Digest::of(blob)) / "layer"));
    EXPECT_TRUE(blobs_->contains(store::Digest::of(blob)));
  }

  static std::string content(const Index& index, std::string_view path) {
    auto i = index->find(path);
    EXPECT_TRUE(i.has_value()) << "no entry " << path;
    if (!i) return {};
    std::string out(index->entry(*i).size, '\0');
    auto n = index->read(*i, 0, std::span(reinterpret_cast<uint8_t*>(out.data()), out.size()));
    EXPECT_TRUE(n.ok()) << n.error().message;
    return out;
  }

  // Overwrites one byte of the stored blob, as a failing disk would.
  void rot(const store::Digest& blob, size_t at) {
    fs::path p = blobs_->path(blob);
    fs::permissions(p, fs::perms::owner_write, fs::perm_options::add);
    std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(at));
    char c = 0;
    f.get(c);
    f.seekp(static_cast<std::streamoff>(at));
    f.put(static_cast<char>(c ^ 0x20));
  }

  TempDir dir_;
  std::shared_ptr<store::BlobStore> blobs_;
  std::shared_ptr<LayerCache> cache_;
  std::vector<std::string> notices_;
  IngestProgress progress_{{}, [this](const std::string& line) { notices_.push_back(line); }};
};

const std::vector<TarEntry> kEntries = {Dir("etc"), File("etc/hostname", "box\n"),
                                        File("big", pattern(3 << 20, 9))};

TEST(DetectCompression, MagicBytesDecide) {
  store::Digest d = store::Digest::of(std::string_view("x"));
  auto of = [&](std::string head) {
    return detail::detect_compression(
        std::span(reinterpret_cast<const uint8_t*>(head.data()), head.size()), d);
  };
  EXPECT_EQ(*of("\x1f\x8b\x08"), detail::Compression::gzip);
  EXPECT_EQ(*of("\x28\xb5\x2f\xfd"), detail::Compression::zstd);
  EXPECT_EQ(*of(skippable("abcd")), detail::Compression::zstd);
  EXPECT_EQ(*of(""), detail::Compression::none);
  EXPECT_EQ(*of("etc/\0\0\0\0"), detail::Compression::none);
  // A tar whose first entry is named like a compressor's magic bytes is still a tar.
  std::string bzh_tar = make_tar({Dir("BZh91AY"), File("BZh91AY/x", "x")});
  EXPECT_EQ(*of(bzh_tar.substr(0, 512)), detail::Compression::none);
  for (auto [head, name] :
       std::vector<std::pair<std::string, std::string>>{{std::string("\xfd"
                                                                     "7zXZ\0\0",
                                                                     7),
                                                         "xz"},
                                                        {"BZh91AY", "bzip2"},
                                                        {"\x04\x22\x4d\x18", "lz4"}}) {
    auto r = of(head);
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_EQ(r.error().code, ENOTSUP);
    EXPECT_NE(r.error().message.find(d.str() + " is " + name + "-compressed"), std::string::npos)
        << r.error().message;
  }
}

TEST_F(Stream, DiffIdIsTheHashOfTheUncompressedStreamWhateverTheCompression) {
  std::string tar = make_tar(kEntries);
  store::Digest diff_id = store::Digest::of(tar);
  for (auto [blob, type] : std::vector<std::pair<std::string, const char*>>{
           {tar, kTar}, {gzip(tar), kTarGzip}, {zstd(tar), kTarZstd}}) {
    Index index = good(blob, type);
    ASSERT_TRUE(index);
    EXPECT_EQ(index->diff_id(), diff_id) << type;
    EXPECT_EQ(content(index, "etc/hostname"), "box\n");
    EXPECT_EQ(content(index, "big"), pattern(3 << 20, 9));
  }
  // Kept in the index: a new cache opening the product gets it back.
  auto fresh = LayerCache::create(blobs_).value();
  auto again = fresh->get(put(gzip(tar), kTarGzip));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->diff_id(), diff_id);
  EXPECT_TRUE(notices_.empty()) << notices_.front();
}

TEST_F(Stream, TheMagicBytesWinOverTheMediaTypeWithANotice) {
  std::string tar = make_tar(kEntries);
  struct Case {
    std::string blob;
    const char* type;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {gzip(tar), kTarZstd, "says zstd, but the blob is gzip by its magic bytes"},
           {gzip(tar), kTar, "says uncompressed tar, but the blob is gzip"},
           {zstd(tar), kTarGzip, "says gzip, but the blob is zstd"},
           {zstd(tar), kDockerGzip, "says gzip, but the blob is zstd"},
           {tar, kTarGzip, "says gzip, but the blob is uncompressed tar"},
       }) {
    notices_.clear();
    Index index = good(c.blob, c.type);
    ASSERT_TRUE(index) << c.type;
    EXPECT_EQ(index->diff_id(), store::Digest::of(tar));
    EXPECT_EQ(content(index, "big"), pattern(3 << 20, 9));
    ASSERT_EQ(notices_.size(), 1u) << c.type;
    EXPECT_NE(notices_[0].find(c.says), std::string::npos) << notices_[0];
    EXPECT_NE(notices_[0].find(store::Digest::of(c.blob).str()), std::string::npos);
    ASSERT_TRUE(store::remove_derived(*blobs_, store::Digest::of(c.blob)).ok());
  }
}

TEST_F(Stream, SeveralGzipMembersAndZstdFramesAreOneStream) {
  std::string tar = make_tar(kEntries);
  size_t cut = tar.size() / 3;  // inside big's data
  std::string a = tar.substr(0, cut);
  std::string b = tar.substr(cut, 1000);
  std::string c = tar.substr(cut + 1000);
  for (auto [blob, type] : std::vector<std::pair<std::string, const char*>>{
           {gzip(a) + gzip(b) + gzip(c), kTarGzip},
           {gzip(a) + gzip("") + gzip(b + c), kTarGzip},
           {zstd(a) + zstd(b) + zstd(c), kTarZstd},
           {skippable("meta") + zstd(a) + skippable("") + zstd(b + c) + skippable("end"), kTarZstd},
       }) {
    Index index = good(blob, type);
    ASSERT_TRUE(index);
    EXPECT_EQ(index->diff_id(), store::Digest::of(tar));
    EXPECT_EQ(content(index, "big"), pattern(3 << 20, 9));
  }
}

TEST_F(Stream, GzipHeadersWithEveryOptionalFieldAreRead) {
  std::string tar = make_tar(kEntries);
  std::string one = gzip_with_header_fields(tar);
  ASSERT_EQ(static_cast<uint8_t>(one[3]), 0x1e);  // FHCRC | FEXTRA | FNAME | FCOMMENT
  size_t cut = tar.size() / 2;
  for (const std::string& blob :
       {one, gzip(tar.substr(0, cut)) + gzip_with_header_fields(tar.substr(cut))}) {
    Index index = good(blob, kTarGzip);
    ASSERT_TRUE(index);
    EXPECT_EQ(index->diff_id(), store::Digest::of(tar));
    EXPECT_EQ(content(index, "big"), pattern(3 << 20, 9));
  }
  // The header's own CRC-16 is checked: a flipped byte of the file name is an error.
  refused(flip(one, 10 + 2 + 8 + 2), kTarGzip,
          "corrupt gzip data in member 1 (near byte 45 of the blob): incorrect header crc");
}

TEST_F(Stream, EmptyStreamsAndEmptyTarsAreEmptyLayers) {
  std::string empty_tar = make_tar({});  // the end-of-archive blocks only
  ASSERT_GE(empty_tar.size(), 1024u);
  struct Case {
    std::string blob;
    const char* type;
    std::string stream;  // uncompressed
  };
  for (const Case& c : std::vector<Case>{
           {gzip(""), kTarGzip, ""},  // skopeo's compression of a 0-byte blob
           {gzip("") + gzip(""), kTarGzip, ""},
           {zstd(""), kTarZstd, ""},
           {skippable("x"), kTarZstd, ""},
           {"", kTar, ""},
           {empty_tar, kTar, empty_tar},
           {gzip(empty_tar), kTarGzip, empty_tar},
       }) {
    Index index = good(c.blob, c.type);
    ASSERT_TRUE(index) << c.type;
    EXPECT_EQ(index->size(), 0u);
    EXPECT_FALSE(index->root());
    EXPECT_EQ(index->diff_id(), store::Digest::of(c.stream));
  }
}

TEST_F(Stream, WrongGzipTrailersAreErrors) {
  std::string gz = gzip(make_tar(kEntries));
  // The trailer: CRC-32 (4 bytes, little-endian), then ISIZE (4 bytes).
  refused(flip(gz, gz.size() - 8), kTarGzip,
          "incorrect data check: the CRC-32 in the trailer of the gzip member does not match");
  refused(flip(gz, gz.size() - 1), kTarGzip,
          "incorrect length check: the length in the trailer of the gzip member does not match");
  // The same in the second of two members.
  std::string two = gzip("") + gz;
  refused(flip(two, two.size() - 5), kTarGzip, "corrupt gzip data in member 2");
}

TEST_F(Stream, GarbageAfterTheCompressedStreamIsAnError) {
  std::string tar = make_tar(kEntries);
  std::string gz = gzip(tar);
  refused(gz + "garbage", kTarGzip,
          "garbage after the gzip stream: 1 member ends at byte " + std::to_string(gz.size()) +
              " of the blob, and what follows is not a gzip member");
  refused(gz + std::string(512, '\0'), kTarGzip, "garbage after the gzip stream");
  refused(gz + gz + "x", kTarGzip, "garbage after the gzip stream: 2 members end");
  refused(gz + "\x1f", kTarGzip, "garbage after the gzip stream");
  refused(gz + "\x1f\x8b", kTarGzip, "the gzip stream is truncated: the blob ends inside member 2");
  std::string zs = zstd(tar);
  refused(zs + "garbage", kTarZstd,
          "garbage after the zstd stream: 1 frame ends at byte " + std::to_string(zs.size()));
  refused(zs + std::string(100, '\0'), kTarZstd, "garbage after the zstd stream");
  refused(zs + "\x28\xb5", kTarZstd, "garbage after the zstd stream");
}

TEST_F(Stream, BytesAfterTheTarEndAreHashedAsDockerAndUmociDo) {
  // Docker's layer store and umoci read the uncompressed stream to its end after their tar
  // reader stops: what follows the end-of-archive blocks counts in the diff_id, nothing more.
  std::string tar = make_tar(kEntries) + "trailing bytes after the end of the archive";
  for (auto [blob, type] : std::vector<std::pair<std::string, const char*>>{
           {tar, kTar}, {gzip(tar), kTarGzip}, {zstd(tar), kTarZstd}}) {
    Index index = good(blob, type);
    ASSERT_TRUE(index);
    EXPECT_EQ(index->diff_id(), store::Digest::of(tar));
    EXPECT_EQ(index->size(), 3u);
    EXPECT_EQ(content(index, "etc/hostname"), "box\n");
  }
}

TEST_F(Stream, TruncatedAndCorruptStreamsAreErrors) {
  std::string tar = make_tar(kEntries);
  std::string gz = gzip(tar);
  refused(gz.substr(0, gz.size() - 4), kTarGzip, "the gzip stream is truncated");
  std::string zs = zstd(tar);
  refused(zs.substr(0, zs.size() - 3), kTarZstd, "the zstd stream is truncated");
  refused(flip(zs, zs.size() - 2), kTarZstd, "corrupt zstd data in frame 1");  // its checksum
  refused(flip(gz, gz.size() / 2), kTarGzip, "corrupt gzip data in member 1");
}

// A deflate stream whose distance reaches before its start (found by layer_ingest_fuzz: the
// decompressor's counters are not to be trusted after such an error).
TEST_F(Stream, ADistanceTooFarBackIsAnError) {
  const std::string blob(
      "\x1f\x8b\x08\x00\x8e\x07\x16\x6b\x02\xff\x4b\x2d\x49\xd6\x67\xa0"
      "\x31\x30\x00\x02\x73\x53\x53\x30\x0d\x04\xe8\x34\x98\x6d\x68\x62"
      "\x6a\x64\x62\x6e\x6e\x60\x02\x16\x37\x33\x35\x33\x62\x50\x30\x65"
      "\xa0\x03\x28\x2d\x2e\x49\x2c\x02\x5a\xc9\x30\x32\x41\x2a\x30\xfe"
      "\x33\xf2\x8b\x4b\xe3\x9f\xe6\x20\xad\x46\x00\x0a\x94\x00\xb4\x16"
      "\xdc\x1a\x4c\x00\x06\x00\x00",
      87);
  refused(blob, kTarGzip, "corrupt gzip data in member 1");
}

TEST_F(Stream, OtherCompressionsAndNonTarsAreRefusedNamingWhatTheBlobIs) {
  refused(std::string("BZh91AY&SY") + pattern(600, 1), kTarGzip, "is bzip2-compressed", ENOTSUP);
  refused(std::string("\xfd"
                      "7zXZ\0",
                      6) +
              pattern(600, 1),
          kTar, "is xz-compressed", ENOTSUP);
  refused(pattern(2000, 3), kTar,
          "the blob is neither gzip nor zstd (by its magic bytes), nor a tar archive");
  refused(gzip(pattern(2000, 3)), kTarGzip, "its gzip content is not a tar archive");
}

TEST_F(Stream, ABlobTheDiskChangedIsEucleanRemovedAndNeverServed) {
  std::string tar = make_tar(kEntries);
  std::string gz = gzip(tar);
  struct Case {
    const char* what;
    std::string blob;
    const char* type;
    size_t at;
  };
  for (const Case& c : std::vector<Case>{
           {"a gzip trailer byte", gz, kTarGzip, gz.size() - 2},
           {"a byte of deflate data", gz, kTarGzip, gz.size() / 2},
           {"a tar header byte", tar, kTar, 0},
           {"a file's byte in a plain tar", tar, kTar, 512 * 6 + 100},
           {"a zstd byte", zstd(tar), kTarZstd, 40},
           {"the last byte, after the tar's end", tar + "pad", kTar, tar.size() + 2},
       }) {
    SCOPED_TRACE(c.what);
    store::LayerRecord layer = put(c.blob, c.type);
    rot(layer.digest, c.at);
    auto r = cache_->get(layer);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, EUCLEAN) << r.error().message;
    EXPECT_NE(r.error().message.find("blob " + layer.digest.str() +
                                     " in the store does not match its digest: the disk "
                                     "changed it"),
              std::string::npos)
        << r.error().message;
    // Removed, with nothing derived from it: the next get says it is not in the store.
    EXPECT_FALSE(blobs_->contains(layer.digest));
    EXPECT_FALSE(fs::exists(blobs_->derived_dir(layer.digest) / "layer"));
    EXPECT_FALSE(fs::exists(blobs_->derived_dir(layer.digest) / "layer.tmp"));
    auto again = cache_->get(layer);
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().code, ENOENT);
    // Fetched again (here: put again), it is read as it should be.
    Index index = good(c.blob, c.type);
    ASSERT_TRUE(index);
    EXPECT_EQ(content(index, "etc/hostname"), "box\n");
    // The next case may use the same blob: its index would be used without reading the blob.
    index.reset();
    ASSERT_TRUE(store::remove_derived(*blobs_, layer.digest).ok());
  }
}

TEST_F(Stream, AnIndexOfAnOlderFormatIsRebuiltWithItsDiffId) {
  std::string tar = make_tar(kEntries);
  store::LayerRecord layer = put(gzip(tar), kTarGzip);
  ASSERT_TRUE(cache_->get(layer).ok());
  fs::path index_file = blobs_->derived_dir(layer.digest) / "layer" / "index";
  {
    fs::permissions(index_file, fs::perms::owner_write, fs::perm_options::add);
    std::fstream f(index_file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(detail::kHdrVersion);
    f.write("\x01\x00\x00\x00", 4);
  }
  auto old = detail::open_layer_index(index_file.parent_path(), layer.digest);
  ASSERT_FALSE(old.ok());
  EXPECT_EQ(old.error().code, EIO);
  EXPECT_NE(old.error().message.find("format version 1, written by an older imagefs"),
            std::string::npos)
      << old.error().message;
  auto fresh = LayerCache::create(blobs_).value();
  auto r = fresh->get(layer);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ((*r)->diff_id(), store::Digest::of(tar));
}

}  // namespace
}  // namespace imagefs::overlay
