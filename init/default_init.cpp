// The embedded imagefs-init: its bytes are placed in this binary by an assembler file generated at
// build time (init/CMakeLists.txt, embed_binary.cmake), between two symbols.
#include "init/default_init.h"

extern "C" {
extern const uint8_t imagefs_default_init_start[];
extern const uint8_t imagefs_default_init_end[];
}

namespace imagefs::init {

std::span<const uint8_t> default_init_binary() {
  return {imagefs_default_init_start, imagefs_default_init_end};
}

}  // namespace imagefs::init
