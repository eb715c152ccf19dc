// containerd's hosts.toml, read with toml++ (Debian's libtomlplusplus), and the order of hosts.
#include "registry/hosts.h"

#include <toml++/toml.h>

#include <cctype>
#include <fstream>
#include <sstream>

#include "registry/transport.h"

namespace imagefs::registry {
namespace {

constexpr size_t kMaxRegistryDirs = 1024;
constexpr uintmax_t kMaxFileBytes = 1u << 20;

Error bad(const std::filesystem::path& file, const std::string& key, const std::string& what) {
  return make_error(EINVAL, "hosts file " + file.string() + ": " + key + ": " + what);
}

std::filesystem::path relative_to(const std::filesystem::path& file, const std::string& p) {
  std::filesystem::path path(p);
  if (path.is_absolute()) return path;
  return file.parent_path() / path;
}

// "mirror:5000", "https://mirror:5000/path" -> scheme, authority and API root (containerd: no
// scheme means https; the path gets "/v2" unless it ends so or override_path is set).
Result<RegistryHost> host_from_url(const std::string& text, bool override_path,
                                   const std::string& key_for_errors,
                                   const std::filesystem::path& file) {
  std::string url = text;
  if (url.find("://") == std::string::npos) url = "https://" + url;
  std::optional<UrlParts> parts = parse_url(url);
  if (!parts || (parts->scheme != "https" && parts->scheme != "http"))
    return bad(file, key_for_errors, "\"" + text + "\" is not an http:// or https:// URL");
  std::string path;
  size_t after_scheme = url.find("://") + 3;
  size_t slash = url.find('/', after_scheme);
  if (slash != std::string::npos) path = url.substr(slash);
  if (path.find_first_of("?#") != std::string::npos)
    return bad(file, key_for_errors, "\"" + text + "\" has a query or fragment");
  while (path.ends_with("/")) path.pop_back();
  if (!override_path && !path.ends_with("/v2")) path += "/v2";
  RegistryHost host;
  host.name = parts->authority();
  host.scheme = parts->scheme;
  host.api_root = path;
  return host;
}

// Reads the per-host keys of `table` (a [host."URL"] table, or the top level for the server).
Result<void> read_host_keys(const toml::table& table, const std::string& prefix,
                            const std::filesystem::path& file, RegistryHost& host) {
  if (const toml::node* caps = table.get("capabilities")) {
    const toml::array* list = caps->as_array();
    if (list == nullptr) return bad(file, prefix + "capabilities", "expected a list of strings");
    host.capabilities = 0;
    for (const toml::node& item : *list) {
      std::optional<std::string> name = item.value<std::string>();
      if (!name) return bad(file, prefix + "capabilities", "expected a list of strings");
      if (*name == "pull") {
        host.capabilities |= static_cast<unsigned>(Capability::pull);
      } else if (*name == "resolve") {
        host.capabilities |= static_cast<unsigned>(Capability::resolve);
      } else if (*name == "push") {
        host.capabilities |= static_cast<unsigned>(Capability::push);
      } else {
        return bad(file, prefix + "capabilities",
                   "unknown capability \"" + *name + "\" (pull, resolve, push)");
      }
    }
  }
  if (const toml::node* skip = table.get("skip_verify")) {
    std::optional<bool> value = skip->value<bool>();
    if (!value) return bad(file, prefix + "skip_verify", "expected true or false");
    host.tls.skip_verify = *value;
  }
  if (const toml::node* ca = table.get("ca")) {
    if (std::optional<std::string> one = ca->value<std::string>()) {
      host.tls.ca.push_back(relative_to(file, *one));
    } else if (const toml::array* list = ca->as_array()) {
      for (const toml::node& item : *list) {
        std::optional<std::string> path = item.value<std::string>();
        if (!path) return bad(file, prefix + "ca", "expected a path or a list of paths");
        host.tls.ca.push_back(relative_to(file, *path));
      }
    } else {
      return bad(file, prefix + "ca", "expected a path or a list of paths");
    }
  }
  if (const toml::node* client = table.get("client")) {
    // "both.pem", ["cert.pem", "key.pem"], or [["cert.pem", "key.pem"], ["other.pem"]].
    auto pair_of = [&](const toml::node& node) -> Result<void> {
      if (std::optional<std::string> one = node.value<std::string>()) {
        host.tls.client.emplace_back(relative_to(file, *one), std::filesystem::path());
        return {};
      }
      const toml::array* list = node.as_array();
      if (list == nullptr || list->empty() || list->size() > 2)
        return bad(file, prefix + "client",
                   "expected \"CERT\", [\"CERT\", \"KEY\"] or a list of such pairs");
      std::optional<std::string> cert = (*list)[0].value<std::string>();
      std::optional<std::string> key =
          list->size() == 2 ? (*list)[1].value<std::string>() : std::optional<std::string>("");
      if (!cert || !key)
        return bad(file, prefix + "client",
                   "expected \"CERT\", [\"CERT\", \"KEY\"] or a list of such pairs");
      host.tls.client.emplace_back(relative_to(file, *cert), key->empty()
                                                                 ? std::filesystem::path()
                                                                 : relative_to(file, *key));
      return {};
    };
    const toml::array* list = client->as_array();
    if (list != nullptr && !list->empty() && (*list)[0].is_array()) {
      for (const toml::node& item : *list) IMAGEFS_CHECK(pair_of(item));
    } else {
      IMAGEFS_CHECK(pair_of(*client));
    }
  }
  if (const toml::node* header = table.get("header")) {
    const toml::table* fields = header->as_table();
    if (fields == nullptr) return bad(file, prefix + "header", "expected a table of headers");
    for (const auto& [name, value] : *fields) {
      std::string key = prefix + "header." + std::string(name.str());
      std::string lower;
      for (char c : name.str())
        lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (lower == "authorization")
        return bad(file, key, "Authorization is not settable (credentials come from config.json)");
      if (std::optional<std::string> one = value.value<std::string>()) {
        host.headers.emplace_back(std::string(name.str()), *one);
      } else if (const toml::array* values = value.as_array()) {
        for (const toml::node& item : *values) {
          std::optional<std::string> v = item.value<std::string>();
          if (!v) return bad(file, key, "expected a string or a list of strings");
          host.headers.emplace_back(std::string(name.str()), *v);
        }
      } else {
        return bad(file, key, "expected a string or a list of strings");
      }
    }
  }
  for (const auto& [path, what] : host.tls.client) {
    (void)what;
    if (path.empty()) return bad(file, prefix + "client", "empty certificate path");
  }
  return {};
}

bool override_path_of(const toml::table& table, const std::string& prefix,
                      const std::filesystem::path& file, Result<void>& status) {
  const toml::node* node = table.get("override_path");
  if (node == nullptr) return false;
  std::optional<bool> value = node->value<bool>();
  if (!value) status = bad(file, prefix + "override_path", "expected true or false");
  return value.value_or(false);
}

}  // namespace

std::string RegistryHost::url() const {
  if (implicit) return name;
  return scheme + "://" + name + api_root;
}

Result<HostsFile> parse_hosts_toml(std::string_view text, const std::filesystem::path& file,
                                   const std::string& registry) {
  toml::table doc;
  // toml++ (as Debian builds it) reports syntax errors by exception: caught here, never passed on.
  try {
    doc = toml::parse(text, file.string());
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << e.source().begin;
    return make_error(EINVAL, "hosts file " + file.string() + " is not valid TOML: " +
                                  std::string(e.description()) + " (at " + where.str() + ")");
  }
  HostsFile out;
  for (const auto& [key, value] : doc) {
    std::string k(key.str());
    static const char* const kKnown[] = {"server", "host",   "capabilities", "skip_verify",
                                         "ca",     "client", "header",       "override_path"};
    if (std::find(std::begin(kKnown), std::end(kKnown), k) == std::end(kKnown))
      return bad(file, k,
                 "unknown key (server, host, capabilities, skip_verify, ca, client, "
                 "header, override_path)");
  }
  Result<void> status;
  if (const toml::node* server = doc.get("server")) {
    std::optional<std::string> url = server->value<std::string>();
    if (!url) return bad(file, "server", "expected a URL string");
    bool override_path = override_path_of(doc, "", file, status);
    IMAGEFS_CHECK(std::move(status));
    IMAGEFS_TRY(host, host_from_url(*url, override_path, "server", file));
    IMAGEFS_CHECK(read_host_keys(doc, "", file, host));
    host.upstream = true;
    host.origin = "hosts file " + file.string();
    // The server that is the registry itself, with nothing special, keeps the transport's
    // usual handling (docker.io's API host, the plain-HTTP rules).
    bool self = host.name == registry || host.name == Transport::api_host(registry);
    if (self && host.api_root == "/v2" && host.tls.empty() && host.headers.empty() &&
        host.scheme == "https")
      host.implicit = true;
    if (self) host.name = registry;  // credentials and tokens under the registry's own name
    out.server = std::move(host);
  } else {
    for (const char* key : {"capabilities", "skip_verify", "ca", "client", "header"}) {
      if (doc.get(key) != nullptr) {
        // Top-level keys configure the server: the registry itself.
        RegistryHost host;
        host.name = registry == "_default" ? std::string() : registry;  // filled in per registry
        host.scheme = "https";
        host.api_root = "/v2";
        IMAGEFS_CHECK(read_host_keys(doc, "", file, host));
        host.upstream = true;
        host.origin = "hosts file " + file.string();
        out.server = std::move(host);
        break;
      }
    }
  }
  if (const toml::node* hosts = doc.get("host")) {
    const toml::table* table = hosts->as_table();
    if (table == nullptr) return bad(file, "host", "expected [host.\"URL\"] tables");
    // toml++ keeps a table's keys sorted; the order written is the source position.
    std::vector<std::pair<toml::source_position, RegistryHost>> ordered;
    for (const auto& [key, value] : *table) {
      std::string url(key.str());
      std::string prefix = "host.\"" + url + "\".";
      const toml::table* fields = value.as_table();
      if (fields == nullptr) return bad(file, "host.\"" + url + "\"", "expected a table");
      for (const auto& [field, unused] : *fields) {
        (void)unused;
        std::string f(field.str());
        static const char* const kHostKeys[] = {"capabilities", "skip_verify", "ca",
                                                "client",       "header",      "override_path"};
        if (std::find(std::begin(kHostKeys), std::end(kHostKeys), f) == std::end(kHostKeys))
          return bad(file, prefix + f,
                     "unknown key (capabilities, skip_verify, ca, client, header, override_path)");
      }
      bool override_path = override_path_of(*fields, prefix, file, status);
      IMAGEFS_CHECK(std::move(status));
      IMAGEFS_TRY(host, host_from_url(url, override_path, "host.\"" + url + "\"", file));
      IMAGEFS_CHECK(read_host_keys(*fields, prefix, file, host));
      host.origin = "hosts file " + file.string();
      ordered.emplace_back(key.source().begin, std::move(host));
    }
    std::stable_sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) {
      return a.first.line != b.first.line ? a.first.line < b.first.line
                                          : a.first.column < b.first.column;
    });
    for (auto& [pos, host] : ordered) out.hosts.push_back(std::move(host));
  }
  return out;
}

Result<std::pair<std::string, RegistryHost>> parse_mirror_option(const std::string& text) {
  size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size())
    return make_error(
        EINVAL, "--mirror \"" + text + "\": expected REGISTRY=URL (docker.io=https://mirror:5000)");
  std::string registry = text.substr(0, eq);
  std::string url = text.substr(eq + 1);
  if (url.find("://") == std::string::npos)
    return make_error(EINVAL, "--mirror \"" + text + "\": the URL needs http:// or https://");
  Result<RegistryHost> host = host_from_url(url, false, "URL", "--mirror");
  if (!host.ok())
    return make_error(EINVAL, "--mirror \"" + text + "\": not an http:// or https:// URL");
  host->capabilities =
      static_cast<unsigned>(Capability::pull) | static_cast<unsigned>(Capability::resolve);
  host->origin = "--mirror";
  return std::make_pair(std::move(registry), std::move(host).value());
}

Result<std::shared_ptr<const RegistryHosts>> RegistryHosts::load(
    const std::filesystem::path& dir, bool dir_is_default,
    const std::vector<std::string>& mirrors) {
  std::map<std::string, HostsFile> files;
  std::optional<HostsFile> fallback;
  std::error_code ec;
  bool exists = !dir.empty() && std::filesystem::is_directory(dir, ec);
  if (!dir.empty() && !exists && !dir_is_default)
    return make_error(ENOENT, "--hosts-dir " + dir.string() + " is not a directory");
  if (exists) {
    size_t seen = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      if (++seen > kMaxRegistryDirs) break;
      std::filesystem::path file = entry.path() / "hosts.toml";
      std::error_code fec;
      if (!std::filesystem::is_regular_file(file, fec)) continue;
      uintmax_t size = std::filesystem::file_size(file, fec);
      if (fec || size > kMaxFileBytes)
        return make_error(EINVAL, "hosts file " + file.string() + " is larger than 1 MiB");
      std::ifstream in(file, std::ios::binary);
      if (!in) return make_error(EACCES, "cannot read hosts file " + file.string());
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::string registry = entry.path().filename().string();
      IMAGEFS_TRY(parsed, parse_hosts_toml(text, file, registry));
      if (registry == "_default") {
        fallback = std::move(parsed);
      } else {
        files[registry] = std::move(parsed);
      }
    }
    if (ec) return make_error(EIO, "cannot list --hosts-dir " + dir.string() + ": " + ec.message());
  }
  // --mirror hosts come first, in the order given.
  std::map<std::string, std::vector<RegistryHost>> extra;
  for (const std::string& text : mirrors) {
    IMAGEFS_TRY(parsed, parse_mirror_option(text));
    extra[parsed.first].push_back(std::move(parsed.second));
  }
  for (auto& [registry, hosts] : extra) {
    HostsFile& file = files[registry];
    hosts.insert(hosts.end(), file.hosts.begin(), file.hosts.end());
    file.hosts = std::move(hosts);
  }
  return std::shared_ptr<const RegistryHosts>(from(std::move(files), std::move(fallback)));
}

std::shared_ptr<const RegistryHosts> RegistryHosts::from(std::map<std::string, HostsFile> files,
                                                         std::optional<HostsFile> fallback) {
  auto out = std::make_shared<RegistryHosts>();
  out->files_ = std::move(files);
  out->fallback_ = std::move(fallback);
  return out;
}

std::vector<RegistryHost> RegistryHosts::hosts_for(const std::string& registry,
                                                   Capability need) const {
  const HostsFile* file = nullptr;
  if (auto it = files_.find(registry); it != files_.end()) {
    file = &it->second;
  } else if (fallback_) {
    file = &*fallback_;
  }
  std::vector<RegistryHost> out;
  if (file != nullptr) {
    for (const RegistryHost& host : file->hosts)
      if (host.can(need)) out.push_back(host);
  }
  RegistryHost server;
  if (file != nullptr && file->server) {
    server = *file->server;
    if (server.name.empty()) server.name = registry;  // _default's top-level keys
  } else {
    server.name = registry;
    server.api_root = "/v2";
    server.implicit = true;
    server.upstream = true;
  }
  // The upstream is always last, even without `need` in its capabilities: its answer is the one
  // to give (a registry that cannot resolve says so).
  out.push_back(std::move(server));
  return out;
}

}  // namespace imagefs::registry
