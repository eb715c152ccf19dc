// The default /init program (imagefs-init, init/pid1.cpp), built statically for the host's
// architecture and embedded in every binary that links this module, so that no file has to be
// installed next to imagefs.
#pragma once

#include <cstdint>
#include <span>

namespace imagefs::init {

// The executable's bytes; the same for the life of the process (read-only data of this binary).
std::span<const uint8_t> default_init_binary();

}  // namespace imagefs::init
