// Fuzzes docker's config.json as DockerCredentials::load reads it (registry/credentials.h): auths
// with `auth` (base64 of user:password), username/password and identitytoken, credsStore and
// credHelpers. No crash and no exception; a refusal is EINVAL with a message that names no secret
// of the file; an accepted file gives, for every registry whose credentials come from `auths`
// alone, exactly the credentials of one of its entries, decoded by an independent strict base64
// decoder (RFC 4648, canonical: padding and zero trailing bits), and some credential whenever an
// entry has one. Also: base64 round trips, and host_of_config_key() of a host is the host. Helpers
// are looked for in an empty PATH, so no program ever runs.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "registry/credentials.h"

namespace {

using imagefs::registry::Credential;
using imagefs::registry::host_of_config_key;
using nlohmann::json;

// A failed invariant names itself before the crash libFuzzer records.
[[noreturn]] void fail(int line, const char* what) {
  std::fprintf(stderr, "docker_config_fuzz.cpp:%d: invariant failed: %s\n", line, what);
  std::abort();
}
#define CHECK(x) ((x) ? (void)0 : fail(__LINE__, #x))

// Strict RFC 4648 base64 with padding (Go's base64.StdEncoding.DecodeString): nullopt for
// anything else, including non-zero bits after the last byte.
std::optional<std::string> strict_base64(std::string_view text) {
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  for (size_t i = 0; i < text.size(); i += 4) {
    uint32_t bits = 0;
    int pads = 0;
    for (size_t j = 0; j < 4; ++j) {
      const char c = text[i + j];
      if (c == '=') {
        if (i + 4 != text.size() || j < 2) return std::nullopt;
        ++pads;
        bits <<= 6;
        continue;
      }
      if (pads > 0) return std::nullopt;
      const size_t v = kAlphabet.find(c);
      if (v == std::string_view::npos) return std::nullopt;
      bits = (bits << 6) | static_cast<uint32_t>(v);
    }
    const char bytes[3] = {static_cast<char>(bits >> 16), static_cast<char>(bits >> 8),
                           static_cast<char>(bits)};
    if (pads == 2 && (bits & 0xffff) != 0) return std::nullopt;
    if (pads == 1 && (bits & 0xff) != 0) return std::nullopt;
    out.append(bytes, 3 - pads);
  }
  return out;
}

// The credential an auths entry holds, read independently: nullopt when it holds none (or is not
// what docker accepts; then the file must either be refused or the entry not used).
struct EntryCredential {
  std::optional<Credential> credential;
  bool strict = true;  // false: the entry is one this reader would refuse
};

EntryCredential read_entry(const json& entry) {
  EntryCredential out;
  if (!entry.is_object()) {
    out.strict = false;
    return out;
  }
  auto str = [&](const char* name) {
    auto v = entry.find(name);
    return v != entry.end() && v->is_string() ? v->get<std::string>() : std::string();
  };
  Credential c;
  if (const std::string auth = str("auth"); !auth.empty()) {
    const std::optional<std::string> decoded = strict_base64(auth);
    const size_t colon = decoded ? decoded->find(':') : std::string::npos;
    if (colon == std::string::npos) {
      out.strict = false;
      return out;
    }
    c.username = decoded->substr(0, colon);
    c.password = decoded->substr(colon + 1);
  } else {
    c.username = str("username");
    c.password = str("password");
  }
  c.identity_token = str("identitytoken");
  if (c.has_password() || !c.identity_token.empty()) out.credential = c;
  return out;
}

bool same(const Credential& a, const Credential& b) {
  return a.username == b.username && a.password == b.password &&
         a.identity_token == b.identity_token;
}

// A path for `bytes` that reads as a file: a memfd, through /proc/self/fd.
class MemFile {
 public:
  explicit MemFile(std::string_view bytes) : fd_(::memfd_create("config.json", MFD_CLOEXEC)) {
    CHECK(fd_ >= 0);
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      CHECK(n > 0);
      done += static_cast<size_t>(n);
    }
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  [[nodiscard]] std::filesystem::path path() const {
    return "/proc/self/fd/" + std::to_string(fd_);
  }

 private:
  int fd_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool sandboxed = [] {
    // No credential helper can be found: PATH names an empty directory. (A name with a '/'
    // would be "docker-credential-NAME" relative to the working directory, which would need a
    // directory called "docker-credential-...": the fuzzer's has none. Not chdir: libFuzzer
    // reads its corpus by relative paths.)
    std::string dir = "/tmp/imagefs-config-fuzz-XXXXXX";
    CHECK(::mkdtemp(dir.data()) != nullptr);
    CHECK(::setenv("PATH", dir.c_str(), 1) == 0);  // NOLINT(concurrency-mt-unsafe)
    return true;
  }();
  (void)sandboxed;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  // Base64 of anything round trips, and whatever decodes strictly decodes the same here.
  CHECK(imagefs::registry::base64_decode(imagefs::registry::base64_encode(bytes)) ==
        std::string(bytes));
  if (auto strict = strict_base64(bytes)) CHECK(imagefs::registry::base64_decode(bytes) == strict);
  // A host is its own key (keys with spaces aside: they are trimmed at the ends only, before the
  // path is cut off, as docker does not trim at all).
  const std::string host = host_of_config_key(bytes);
  if (bytes.find_first_of(" \t\n\r\f\v") == std::string_view::npos)
    CHECK(host_of_config_key(host) == host);

  MemFile file(bytes);
  auto loaded = imagefs::registry::DockerCredentials::load(file.path());
  const json doc = json::parse(bytes, nullptr, false);
  if (!loaded.ok()) {
    CHECK(loaded.error().code == EINVAL && !loaded.error().message.empty());
    // The message names the file and what is wrong, and an entry by its key only: one of the
    // sentences load() writes, so no password or token of the file can be in it.
    const std::string prefix = "docker config " + file.path().string() + ": ";
    const std::string& message = loaded.error().message;
    CHECK(message.starts_with(prefix));
    const std::string rest = message.substr(prefix.size());
    bool known = rest == "cannot be read" || rest == "not valid JSON" ||
                 rest == "not a JSON object" || rest == "\"auths\" is not an object" ||
                 rest == "\"credHelpers\" is not an object" ||
                 rest == "\"credsStore\" is not a string";
    if (!doc.is_discarded() && doc.is_object()) {
      for (const char* section : {"auths", "credHelpers"}) {
        auto it = doc.find(section);
        if (it == doc.end() || !it->is_object()) continue;
        for (const auto& [key, value] : it->items()) {
          (void)value;
          if (std::string_view(section) == "auths") {
            known |= rest == "auths entry for " + key + " is not an object" ||
                     rest == "auths entry for " + key +
                                 " has an \"auth\" that is not base64 of user:password";
          } else {
            known |= rest == "credHelpers entry for " + key + " is not a string";
          }
        }
      }
    }
    CHECK(known);
    return 0;
  }
  CHECK(!doc.is_discarded() && doc.is_object());
  auto& creds = *loaded;
  creds->set_helper_timeout(std::chrono::milliseconds(2000));
  const bool store = doc.contains("credsStore") && doc["credsStore"].is_string() &&
                     !doc["credsStore"].get<std::string>().empty();
  std::set<std::string> helped;
  if (auto helpers = doc.find("credHelpers"); helpers != doc.end() && helpers->is_object()) {
    for (const auto& [key, name] : helpers->items()) {
      if (!name.is_string() || name.get<std::string>().empty()) continue;
      helped.insert(host_of_config_key(key));
    }
  }
  // Every registry of auths: what lookup gives is what one of its entries says.
  std::map<std::string, std::vector<EntryCredential>> by_host;
  if (auto auths = doc.find("auths"); auths != doc.end() && auths->is_object()) {
    for (const auto& [key, entry] : auths->items())
      by_host[host_of_config_key(key)].push_back(read_entry(entry));
  }
  size_t looked_up = 0;
  for (const auto& [registry, entries] : by_host) {
    if (++looked_up > 16) break;  // enough for one input
    auto found = creds->lookup(registry);
    if (store || helped.count(registry) != 0) {
      // A helper was asked, and is not there: an error naming it (EACCES), never a crash.
      if (!found.ok()) CHECK(found.error().code == EACCES && !found.error().message.empty());
      continue;
    }
    CHECK(found.ok());
    bool any = false;
    bool all_strict = true;
    bool matches = false;
    for (const EntryCredential& e : entries) {
      any |= e.credential.has_value();
      all_strict &= e.strict;
      if (*found && e.credential && same(**found, *e.credential)) matches = true;
    }
    if (*found) {
      CHECK((*found)->has_password() || !(*found)->identity_token.empty());
      // Entries this reader refuses (lenient base64) may be the source: only strict ones are
      // compared.
      if (all_strict) CHECK(matches);
    } else {
      CHECK(!any);
    }
  }
  return 0;
}
