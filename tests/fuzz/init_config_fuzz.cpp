// Fuzzes what the default /init reads from untrusted sources: an image's config.json (into the
// init config, which must then survive its own encoding), /.imagefs/init.conf, the kernel command
// line, and the image's /etc/passwd and /etc/group. No crash, no exception, and
// decode(encode(config)) == config.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "init/boot_options.h"
#include "init/image_config.h"
#include "init/init_config.h"
#include "init/users.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  using namespace imagefs::init;
  switch (data[0] % 4) {
    case 0: {
      auto config = init_config_from_image(input);
      if (config.ok()) {
        auto back = decode_config(encode_config(*config));
        if (!back.ok() || !(*back == *config)) std::abort();
      }
      break;
    }
    case 1: {
      auto config = decode_config(input);
      if (config.ok()) {
        auto back = decode_config(encode_config(*config));
        if (!back.ok() || !(*back == *config)) std::abort();
      }
      break;
    }
    case 2: {
      BootOptions boot = parse_boot_options(input);
      if (boot.exec && boot.exec->empty()) std::abort();
      break;
    }
    case 3: {
      // "SPEC\nPASSWD\0GROUP": a user spec, then the two files.
      const size_t nl = input.find('\n');
      const std::string_view spec = input.substr(0, nl);
      const std::string_view rest = nl == std::string_view::npos ? "" : input.substr(nl + 1);
      const size_t nul = rest.find('\0');
      const std::string passwd(rest.substr(0, nul));
      const std::string group(nul == std::string_view::npos ? "" : rest.substr(nul + 1));
      (void)resolve_user(spec, passwd, group);
      break;
    }
  }
  return 0;
}
