// The embedded default /init is a static executable of this machine's architecture: it runs in
// an image without a libc or a dynamic loader.
#include "init/default_init.h"

#include <elf.h>
#include <gtest/gtest.h>

#include <cstring>

namespace imagefs::init {
namespace {

TEST(DefaultInit, IsAStaticElfExecutable) {
  const std::span<const uint8_t> bin = default_init_binary();
  ASSERT_GT(bin.size(), sizeof(Elf64_Ehdr));
  Elf64_Ehdr eh{};
  std::memcpy(&eh, bin.data(), sizeof eh);
  ASSERT_EQ(std::memcmp(eh.e_ident, ELFMAG, SELFMAG), 0);
  EXPECT_EQ(eh.e_ident[EI_CLASS], ELFCLASS64);
#if defined(__x86_64__)
  EXPECT_EQ(eh.e_machine, EM_X86_64);
#elif defined(__aarch64__)
  EXPECT_EQ(eh.e_machine, EM_AARCH64);
#endif
  EXPECT_EQ(eh.e_type, ET_EXEC);  // not a PIE, which would want a loader or a static-pie start
  ASSERT_LE(eh.e_phoff + size_t{eh.e_phnum} * sizeof(Elf64_Phdr), bin.size());
  for (size_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph{};
    std::memcpy(&ph, bin.data() + eh.e_phoff + i * sizeof ph, sizeof ph);
    EXPECT_NE(ph.p_type, static_cast<uint32_t>(PT_INTERP)) << "it names a dynamic loader";
    EXPECT_NE(ph.p_type, static_cast<uint32_t>(PT_DYNAMIC)) << "it links shared libraries";
  }
  // Small enough not to matter next to an image (a static glibc is most of it).
  EXPECT_LT(bin.size(), size_t{2} << 20);
}

}  // namespace
}  // namespace imagefs::init
