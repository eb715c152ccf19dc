// Content digests ("sha256:<64 hex>") and a streaming SHA-256 hasher. Every blob the store keeps is
// named by its digest and checked against it before it is kept.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"

namespace imagefs::store {

class Digest {
 public:
  // Parses "sha256:<64 lowercase hex>". Other algorithms are refused (EINVAL) with a message
  // naming the algorithm.
  static Result<Digest> parse(std::string_view text);
  static Digest of(std::span<const uint8_t> bytes);
  static Digest of(std::string_view bytes);

  [[nodiscard]] const std::string& str() const { return text_; }  // "sha256:ab..."
  [[nodiscard]] std::string_view hex() const { return std::string_view(text_).substr(7); }
  friend bool operator==(const Digest&, const Digest&) = default;
  friend auto operator<=>(const Digest&, const Digest&) = default;

 private:
  explicit Digest(std::string text) : text_(std::move(text)) {}
  friend class Sha256;
  std::string text_;
};

// Incremental SHA-256 (OpenSSL EVP). Not thread-safe; one per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(std::span<const uint8_t> bytes);
  void update(std::string_view bytes);
  // Ends the stream; the hasher may not be updated afterwards.
  Digest finish();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

}  // namespace imagefs::store
