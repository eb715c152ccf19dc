// Registry hosts: for one registry name ("docker.io", "127.0.0.1:5000"), the hosts a request may
// go to, in order: mirrors and pull-through caches first, then the upstream. Read from
// containerd's hosts.toml (a certs.d-style directory, --hosts-dir) and from --mirror REG=URL;
// the rules are in docs/MIRRORS.md. Immutable once loaded: shared between threads without locks.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace imagefs::registry {

// What a request needs a host to do. resolve: a manifest by tag (HEAD or GET); pull: a manifest
// by digest, a config or a layer blob. push is read (containerd's files have it) and never used.
enum class Capability : unsigned { pull = 1, resolve = 2, push = 4 };

// TLS for one host; empty fields mean the transport's defaults (system CAs plus --ca-file).
struct HostTls {
  bool skip_verify = false;
  std::vector<std::filesystem::path> ca;  // PEM files trusted besides the system's
  // Client certificates: (certificate, key); an empty key means the certificate file holds the
  // key too. libcurl presents one: the first pair.
  std::vector<std::pair<std::filesystem::path, std::filesystem::path>> client;
  [[nodiscard]] bool empty() const { return !skip_verify && ca.empty() && client.empty(); }
};

// One host to try. The upstream of a registry without a hosts.toml (or whose `server` is the
// registry itself) is `implicit`: the transport picks its scheme and API host as it always did
// (registry-1.docker.io for docker.io, plain HTTP for loopback and --insecure-registry).
struct RegistryHost {
  std::string name;      // "mirror.example:5000": the name credentials and tokens are kept under
  std::string scheme;    // "https" or "http"; empty when implicit
  std::string api_root;  // "/v2" (or override_path's path, no trailing '/'); "/v2" when implicit
  unsigned capabilities = static_cast<unsigned>(Capability::pull) |
                          static_cast<unsigned>(Capability::resolve) |
                          static_cast<unsigned>(Capability::push);
  HostTls tls;
  std::vector<std::pair<std::string, std::string>> headers;  // sent with every request
  bool upstream = false;  // the registry's own server (last in the list)
  bool implicit = false;  // see above
  std::string origin;     // "hosts.toml FILE" or "--mirror": where it was configured

  [[nodiscard]] bool can(Capability c) const {
    return (capabilities & static_cast<unsigned>(c)) != 0;
  }
  // "https://mirror.example:5000/v2" (for logs); the registry name when implicit.
  [[nodiscard]] std::string url() const;
};

// The parsed contents of one hosts.toml: hosts in file order, then the server.
struct HostsFile {
  std::vector<RegistryHost> hosts;     // [host."URL"] tables, in the order written
  std::optional<RegistryHost> server;  // `server` with the top-level keys; nullopt: implicit
};

// Parses the text of `file` (its name for messages; relative ca/client paths are relative to its
// directory) for registry `registry`. EINVAL naming the file and key for bad TOML, an unknown
// capability, a URL that is not http(s), a value of the wrong type.
Result<HostsFile> parse_hosts_toml(std::string_view text, const std::filesystem::path& file,
                                   const std::string& registry);

// "docker.io=https://mirror.example:5000" -> (docker.io, a host with pull and resolve).
// EINVAL for a missing '=' or a URL that is not http(s).
Result<std::pair<std::string, RegistryHost>> parse_mirror_option(const std::string& text);

class RegistryHosts {
 public:
  // No mirrors: every registry is its own single, implicit host.
  RegistryHosts() = default;

  // Reads DIR/<registry>/hosts.toml for every directory of `dir` that has one (and
  // DIR/_default/hosts.toml), and adds `mirrors` (--mirror REG=URL, each placed before the
  // hosts of REG's file). A missing `dir` is no error when `dir_is_default` (the default
  // /etc/imagefs/certs.d); a given one that is missing is ENOENT. Files are read once: a daemon
  // restarts to see changes. At most 1024 registry directories are read.
  static Result<std::shared_ptr<const RegistryHosts>> load(const std::filesystem::path& dir,
                                                           bool dir_is_default,
                                                           const std::vector<std::string>& mirrors);
  // From parsed parts (unit tests).
  static std::shared_ptr<const RegistryHosts> from(std::map<std::string, HostsFile> files,
                                                   std::optional<HostsFile> fallback);

  // The hosts to try for `registry` ("docker.io", "host:port") that can do `need`, in order;
  // the upstream last (implicit unless `server` names another). Never empty: a registry whose
  // file gives the server no `need` still ends with the server, so its error is the answer.
  [[nodiscard]] std::vector<RegistryHost> hosts_for(const std::string& registry,
                                                    Capability need) const;
  // Whether any registry has a mirror (so logs may say "via HOST").
  [[nodiscard]] bool any() const { return !files_.empty() || fallback_.has_value(); }

 private:
  std::map<std::string, HostsFile> files_;  // registry name -> its file (and --mirror hosts)
  std::optional<HostsFile> fallback_;       // _default
};

}  // namespace imagefs::registry
