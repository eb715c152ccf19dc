// Docker's Entrypoint/Cmd combination rules.
#include "init/command.h"

#include <gtest/gtest.h>

namespace imagefs::init {
namespace {

TEST(ComposeCommand, CmdOnly) {
  EXPECT_EQ(*compose_command({}, {"/bin/sh", "-c", "echo hi"}), (Argv{"/bin/sh", "-c", "echo hi"}));
}

TEST(ComposeCommand, EntrypointOnly) {
  EXPECT_EQ(*compose_command({"/app", "--serve"}, {}), (Argv{"/app", "--serve"}));
}

TEST(ComposeCommand, CmdIsEntrypointsDefaultArguments) {
  EXPECT_EQ(*compose_command({"/app"}, {"--port", "80"}), (Argv{"/app", "--port", "80"}));
}

TEST(ComposeCommand, OverrideReplacesBoth) {
  EXPECT_EQ(*compose_command({"/app"}, {"--port", "80"}, Argv{"/agent", "-v"}),
            (Argv{"/agent", "-v"}));
}

TEST(ComposeCommand, NothingToRun) {
  Result<Argv> r = compose_command({}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOEXEC);
  EXPECT_NE(r.error().message.find("neither Entrypoint nor Cmd"), std::string::npos);
  EXPECT_FALSE(compose_command({"/app"}, {}, Argv{}).ok());
}

}  // namespace
}  // namespace imagefs::init
