// The config file of the default /init and the image config it is made from.
#include "init/init_config.h"

#include <gtest/gtest.h>

#include "init/command.h"
#include "init/image_config.h"

namespace imagefs::init {
namespace {

using namespace std::string_literals;

InitConfig full() {
  InitConfig c;
  c.entrypoint = {"/usr/bin/app", "--flag=a b"};
  c.cmd = {"serve", "", "line\nbreak"};
  c.env = {"PATH=/bin", "EMPTY=", "GREETING=hello world"};
  c.working_dir = "/srv";
  c.user = "app:staff";
  c.exec = Argv{"/opt/agent", "--port", "80"};
  return c;
}

TEST(InitConfigFile, RoundTrip) {
  for (InitConfig c : {full(), InitConfig{}}) {
    Result<InitConfig> back = decode_config(encode_config(c));
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(*back, c);
  }
  InitConfig no_exec = full();
  no_exec.exec.reset();
  EXPECT_EQ(*decode_config(encode_config(no_exec)), no_exec);
  InitConfig empty_exec = full();  // written, though imagefs never writes one
  empty_exec.exec = Argv{};
  EXPECT_EQ(*decode_config(encode_config(empty_exec)), empty_exec);
}

// The documented layout, byte for byte (docs/ARCHITECTURE.md).
TEST(InitConfigFile, Bytes) {
  InitConfig c;
  c.cmd = {"/bin/sh"};
  c.env = {"A=1"};
  c.user = "1000";
  EXPECT_EQ(encode_config(c),
            "imagefs-init-config 1\0entrypoint\0000\0cmd\0001\0/bin/sh\0env\0001\0A=1\0"
            "workdir\0001\0\0user\0001\0001000\0"s);
  c.exec = Argv{"/a", "b"};
  EXPECT_TRUE(encode_config(c).ends_with("exec\0002\0/a\0b\0"s));
}

TEST(InitConfigFile, UnknownKeysAreSkipped) {
  std::string bytes = encode_config(full());
  bytes += "future\0002\0x\0y\0"s;
  bytes += "cmd\0001\0last wins\0"s;
  Result<InitConfig> c = decode_config(bytes);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->cmd, Argv{"last wins"});
  EXPECT_EQ(c->entrypoint, full().entrypoint);
}

TEST(InitConfigFile, DamagedFilesAreRefused) {
  const std::string good = encode_config(full());
  const std::vector<std::string> bad = {
      "",
      "hello\0"s,
      "imagefs-init-config 2\0"s,
      good.substr(0, good.size() - 1),              // no final NUL
      "imagefs-init-config 1\0cmd\0"s,              // no count
      "imagefs-init-config 1\0cmd\0003\0a\0b\0"s,   // fewer values than counted
      "imagefs-init-config 1\0cmd\0-1\0"s,          // not a count
      "imagefs-init-config 1\0cmd\0x1\0a\0"s,       // not a count
      "imagefs-init-config 1\0user\0002\0a\0b\0"s,  // one value only
      "imagefs-init-config 1\0workdir\0000\0"s,     // one value only
  };
  for (const std::string& b : bad) {
    Result<InitConfig> c = decode_config(b);
    EXPECT_FALSE(c.ok()) << "accepted: " << b;
    if (!c.ok()) {
      EXPECT_EQ(c.error().code, EINVAL);
      EXPECT_NE(c.error().message.find("/.imagefs/init.conf"), std::string::npos);
    }
  }
  Result<InitConfig> newer = decode_config("imagefs-init-config 2\0"s);
  EXPECT_NE(newer.error().message.find("version 2"), std::string::npos);
}

TEST(ImageConfig, ReadsTheFieldsOfConfig) {
  Result<InitConfig> c = init_config_from_image(R"({
    "architecture": "amd64", "os": "linux",
    "config": {"Entrypoint": ["/app", "-x"], "Cmd": ["serve"], "Env": ["A=1", "B=two words"],
               "WorkingDir": "/srv", "User": "app:staff", "ExposedPorts": {"80/tcp": {}},
               "Labels": {"x": "y"}}})");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->entrypoint, (Argv{"/app", "-x"}));
  EXPECT_EQ(c->cmd, Argv{"serve"});
  EXPECT_EQ(c->env, (Argv{"A=1", "B=two words"}));
  EXPECT_EQ(c->working_dir, "/srv");
  EXPECT_EQ(c->user, "app:staff");
  EXPECT_FALSE(c->exec);
}

TEST(ImageConfig, MissingAndNullFieldsAreEmpty) {
  for (const char* json : {R"({"os": "linux"})", R"({"config": null})", R"({"config": {}})",
                           R"({"config": {"Entrypoint": null, "Cmd": null, "Env": null,
                                          "WorkingDir": null, "User": null}})"}) {
    Result<InitConfig> c = init_config_from_image(json);
    ASSERT_TRUE(c.ok()) << json << ": " << c.error().message;
    EXPECT_EQ(*c, InitConfig{}) << json;
  }
}

TEST(ImageConfig, WrongTypesAreNamed) {
  const std::pair<const char*, const char*> cases[] = {
      {"[1, 2]", "not a JSON object"},
      {"{", "not a JSON object"},
      {R"({"config": []})", "\"config\""},
      {R"({"config": {"Cmd": {"sh": 1}}})", "Cmd is neither a string nor a list of strings"},
      {R"({"config": {"Entrypoint": 7}})", "Entrypoint"},
      {R"({"config": {"Env": "A=1"}})", "Env is not a list of strings"},
      {R"({"config": {"Entrypoint": "a\u0000b"}})", "NUL"},
      {R"({"config": {"Entrypoint": [1]}})", "Entrypoint"},
      {R"({"config": {"Env": {"A": "1"}}})", "Env"},
      {R"({"config": {"User": 1000}})", "User"},
      {R"({"config": {"WorkingDir": ["/"]}})", "WorkingDir"},
      {R"({"config": {"Cmd": ["a\u0000b"]}})", "NUL"},
  };
  for (const auto& [json, needle] : cases) {
    Result<InitConfig> c = init_config_from_image(json);
    ASSERT_FALSE(c.ok()) << json;
    // EIO, as the mount answers it for the archives: a broken image (README, troubleshooting).
    EXPECT_EQ(c.error().code, EIO);
    EXPECT_NE(c.error().message.find(needle), std::string::npos)
        << json << ": " << c.error().message;
  }
}

// docker reads Entrypoint and Cmd as moby's strslice.StrSlice: an array of strings, or one string
// that is a list of one element (not split at spaces).
TEST(ImageConfig, StringCmdAndEntrypointAreOneElementLists) {
  Result<InitConfig> c = init_config_from_image(
      R"({"config": {"Entrypoint": "/bin/sh -c", "Cmd": "echo hello world", "Env": ["A=1"]}})");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->entrypoint, Argv{"/bin/sh -c"});
  EXPECT_EQ(c->cmd, Argv{"echo hello world"});
  EXPECT_EQ(c->env, Argv{"A=1"});

  Result<InitConfig> empty = init_config_from_image(R"({"config": {"Cmd": ""}})");
  ASSERT_TRUE(empty.ok()) << empty.error().message;
  EXPECT_EQ(empty->cmd, Argv{""});  // as docker: [""], not []
  EXPECT_TRUE(empty->entrypoint.empty());

  // The command the default /init runs from it: docker's rules (init/command.h).
  Result<InitConfig> cmd_only = init_config_from_image(R"({"config": {"Cmd": "/bin/true"}})");
  ASSERT_TRUE(cmd_only.ok()) << cmd_only.error().message;
  Result<Argv> argv = compose_command(cmd_only->entrypoint, cmd_only->cmd, cmd_only->exec);
  ASSERT_TRUE(argv.ok()) << argv.error().message;
  EXPECT_EQ(*argv, Argv{"/bin/true"});

  // And the config file the init reads back holds the same.
  Result<InitConfig> back = decode_config(encode_config(*c));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, *c);
}

// --exec replaces Entrypoint and Cmd: whatever they hold cannot stop the build; the rest of the
// config is still read (and still checked).
TEST(ImageConfig, ExecIgnoresEntrypointAndCmd) {
  const Argv exec{"/agent", "--serve"};
  for (const char* json :
       {R"({"config": {"Entrypoint": {"x": 1}, "Cmd": [1, null], "Env": ["A=1"], "User": "u"}})",
        R"({"config": {"Entrypoint": 5, "Cmd": "a\u0000b", "Env": ["A=1"], "User": "u"}})",
        R"({"config": {"Cmd": true, "Env": ["A=1"], "User": "u"}})"}) {
    Result<InitConfig> without = init_config_from_image(json);
    EXPECT_FALSE(without.ok()) << json;
    Result<InitConfig> c = init_config_from_image(json, exec);
    ASSERT_TRUE(c.ok()) << json << ": " << c.error().message;
    EXPECT_TRUE(c->entrypoint.empty());
    EXPECT_TRUE(c->cmd.empty());
    EXPECT_EQ(c->exec, exec);
    EXPECT_EQ(c->env, Argv{"A=1"});
    EXPECT_EQ(c->user, "u");
    Result<Argv> argv = compose_command(c->entrypoint, c->cmd, c->exec);
    ASSERT_TRUE(argv.ok()) << argv.error().message;
    EXPECT_EQ(*argv, exec);
  }
  Result<InitConfig> bad_env = init_config_from_image(R"({"config": {"Env": 1}})", exec);
  ASSERT_FALSE(bad_env.ok());
  EXPECT_NE(bad_env.error().message.find("Env"), std::string::npos);
  Result<InitConfig> no_config = init_config_from_image(R"({"os": "linux"})", exec);
  ASSERT_TRUE(no_config.ok()) << no_config.error().message;
  EXPECT_EQ(no_config->exec, exec);
}

}  // namespace
}  // namespace imagefs::init
