// The kernel command line: split as lib/cmdline.c's next_arg() does, and imagefs.* parameters.
#include "init/boot_options.h"

#include <gtest/gtest.h>

namespace imagefs::init {
namespace {

TEST(KernelWords, AsTheKernelSplitsThem) {
  EXPECT_EQ(kernel_words("  console=ttyS0 quiet  panic=-1\n"),
            (Argv{"console=ttyS0", "quiet", "panic=-1"}));
  EXPECT_EQ(kernel_words(R"(a="b c" "d e" f=g"h i"j "k=l m" "n)"),
            (Argv{"a=b c", "d e", "f=g\"h i\"j", "k=l m", "n"}));
  EXPECT_EQ(kernel_words(""), Argv{});
  EXPECT_EQ(kernel_words(R"(x="")"), Argv{"x="});
}

TEST(BootOptions, ExecArgsAndEnv) {
  BootOptions b =
      parse_boot_options(R"(console=ttyS0 imagefs.exec="/usr/bin/agent --port 80" imagefs.env=A=1 )"
                         R"(imagefs.env="B=two words" quiet -- --verbose "a b" x=y -- last)");
  EXPECT_EQ(b.exec, (Argv{"/usr/bin/agent", "--port", "80"}));
  EXPECT_EQ(b.env, (Argv{"A=1", "B=two words"}));
  EXPECT_EQ(b.args, (Argv{"--verbose", "a b", "x=y", "--", "last"}));
}

TEST(BootOptions, NothingForUs) {
  EXPECT_EQ(parse_boot_options("console=ttyS0 root=/dev/vda rw init=/init"), BootOptions{});
  EXPECT_EQ(parse_boot_options("imagefs.exec= imagefs.env="), BootOptions{});
  EXPECT_EQ(parse_boot_options("--").args, Argv{});
}

TEST(BootOptions, TheLastExecCounts) {
  EXPECT_EQ(parse_boot_options("imagefs.exec=/a imagefs.exec=/b").exec, Argv{"/b"});
}

// Words after "--" are not parameters, even when they look like ours.
TEST(BootOptions, AfterDashesEverythingIsAnArgument) {
  BootOptions b = parse_boot_options("-- imagefs.exec=/x");
  EXPECT_FALSE(b.exec);
  EXPECT_EQ(b.args, Argv{"imagefs.exec=/x"});
}

}  // namespace
}  // namespace imagefs::init
