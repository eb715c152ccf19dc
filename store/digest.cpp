// SHA-256 digests through OpenSSL's EVP interface.
#include "store/digest.h"

#include <openssl/evp.h>

#include <algorithm>
#include <stdexcept>

namespace imagefs::store {

struct Sha256::Ctx {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  // Allocation failure of a few bytes inside OpenSSL is not a recoverable condition here.
  if (!ctx_->md || EVP_DigestInit_ex(ctx_->md.get(), EVP_sha256(), nullptr) != 1)
    throw std::bad_alloc();
}

Sha256::~Sha256() = default;

void Sha256::update(std::span<const uint8_t> bytes) {
  EVP_DigestUpdate(ctx_->md.get(), bytes.data(), bytes.size());
}

void Sha256::update(std::string_view bytes) {
  EVP_DigestUpdate(ctx_->md.get(), bytes.data(), bytes.size());
}

Digest Sha256::finish() {
  std::array<uint8_t, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_->md.get(), md.data(), &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text = "sha256:";
  for (unsigned int i = 0; i < len; ++i) {
    text += kHex[md[i] >> 4];
    text += kHex[md[i] & 0xf];
  }
  return Digest(std::move(text));
}

Result<Digest> Digest::parse(std::string_view text) {
  size_t colon = text.find(':');
  if (colon == std::string_view::npos)
    return make_error(EINVAL, "invalid digest \"" + std::string(text) + "\": no algorithm");
  std::string_view algo = text.substr(0, colon);
  std::string_view hex = text.substr(colon + 1);
  if (algo != "sha256")
    return make_error(EINVAL, "unsupported digest algorithm \"" + std::string(algo) +
                                  "\" (only sha256 is supported)");
  bool ok = hex.size() == 64 && std::all_of(hex.begin(), hex.end(), [](char c) {
              return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
            });
  if (!ok)
    return make_error(EINVAL, "invalid digest \"" + std::string(text) +
                                  "\": expected sha256: and 64 lowercase hex digits");
  return Digest(std::string(text));
}

Digest Digest::of(std::span<const uint8_t> bytes) {
  Sha256 h;
  h.update(bytes);
  return h.finish();
}

Digest Digest::of(std::string_view bytes) {
  Sha256 h;
  h.update(bytes);
  return h.finish();
}

}  // namespace imagefs::store
