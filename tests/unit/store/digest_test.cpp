// Digest parsing and SHA-256 against known vectors (FIPS 180-2 examples).
#include "store/digest.h"

#include <gtest/gtest.h>

#include <string>

namespace imagefs::store {
namespace {

TEST(Digest, KnownVectors) {
  EXPECT_EQ(Digest::of(std::string_view("")).str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Digest::of(std::string_view("abc")).str(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Digest, StreamingEqualsWhole) {
  std::string data(1 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + 7);
  Sha256 h;
  for (size_t off = 0; off < data.size(); off += 4093)
    h.update(std::string_view(data).substr(off, 4093));
  EXPECT_EQ(h.finish(), Digest::of(std::string_view(data)));
}

TEST(Digest, ParseRoundTrip) {
  std::string text = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  Result<Digest> d = Digest::parse(text);
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(d->str(), text);
  EXPECT_EQ(d->hex(), text.substr(7));
}

TEST(Digest, ParseRejects) {
  for (const char* bad :
       {"", "sha256", "sha256:", "sha256:ABC",
        "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", "sha512:00",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}) {
    Result<Digest> d = Digest::parse(bad);
    EXPECT_FALSE(d.ok()) << bad;
    if (!d.ok()) {
      EXPECT_EQ(d.error().code, EINVAL);
    }
  }
  EXPECT_NE(Digest::parse("sha512:00").error().message.find("sha512"), std::string::npos);
}

}  // namespace
}  // namespace imagefs::store
