// Docker's Entrypoint/Cmd combination rules, the PATH search, word splitting.
#include "init/command.h"

#include <gtest/gtest.h>

#include <set>

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

// `docker run IMAGE ARGS`: the arguments replace Cmd and keep Entrypoint.
TEST(ComposeCommand, ArgsReplaceCmd) {
  EXPECT_EQ(*compose_command({"/app"}, {"--port", "80"}, std::nullopt, {"--port", "90"}),
            (Argv{"/app", "--port", "90"}));
  EXPECT_EQ(*compose_command({}, {"/bin/sh"}, std::nullopt, {"/bin/echo", "hi"}),
            (Argv{"/bin/echo", "hi"}));
}

// `docker run --entrypoint PROG IMAGE ARGS`: PROG then ARGS; the image's Cmd is dropped.
TEST(ComposeCommand, ArgsFollowTheOverride) {
  EXPECT_EQ(*compose_command({"/app"}, {"--port", "80"}, Argv{"/agent"}, {"-v"}),
            (Argv{"/agent", "-v"}));
}

TEST(ComposeCommand, NothingToRun) {
  Result<Argv> r = compose_command({}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOEXEC);
  EXPECT_NE(r.error().message.find("neither Entrypoint nor Cmd"), std::string::npos);
  EXPECT_FALSE(compose_command({"/app"}, {}, Argv{}).ok());
  EXPECT_FALSE(compose_command({""}, {"x"}).ok());
}

TEST(SplitWords, SpacesTabsNewlines) {
  EXPECT_EQ(split_words("  /usr/bin/agent --port\t80\n"), (Argv{"/usr/bin/agent", "--port", "80"}));
  EXPECT_EQ(split_words(""), Argv{});
  EXPECT_EQ(split_words("   "), Argv{});
  EXPECT_EQ(split_words("one"), Argv{"one"});
}

TEST(FindProgram, SearchesPathInOrder) {
  const std::set<std::string> files = {"/usr/bin/python3", "/bin/python3", "/sbin/tool"};
  auto exists = [&](const std::string& p) { return files.count(p) != 0; };
  EXPECT_EQ(*find_program("python3", "/usr/local/bin:/usr/bin:/bin", exists), "/usr/bin/python3");
  EXPECT_EQ(*find_program("tool", "/usr/bin:/sbin", exists), "/sbin/tool");
  // An empty entry is the working directory, as for a shell.
  EXPECT_EQ(
      *find_program("here", "/usr/bin::/bin", [](const std::string& p) { return p == "./here"; }),
      "./here");
}

TEST(FindProgram, NamesWithASlashAreNotSearched) {
  auto none = [](const std::string&) { return false; };
  EXPECT_EQ(*find_program("/opt/app", "/usr/bin", none), "/opt/app");
  EXPECT_EQ(*find_program("./run.sh", "/usr/bin", none), "./run.sh");
}

TEST(FindProgram, NotFoundNamesThePath) {
  Result<std::string> r =
      find_program("nosuch", "/usr/bin:/bin", [](const std::string&) { return false; });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_NE(r.error().message.find("\"nosuch\""), std::string::npos);
  EXPECT_NE(r.error().message.find("PATH=/usr/bin:/bin"), std::string::npos);
}

}  // namespace
}  // namespace imagefs::init
