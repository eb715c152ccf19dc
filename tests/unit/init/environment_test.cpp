// The command's environment as docker builds it.
#include "init/environment.h"

#include <gtest/gtest.h>

namespace imagefs::init {
namespace {

TEST(ContainerEnvironment, DockerDefaults) {
  EXPECT_EQ(container_environment({}, "vm", "/root"),
            (Argv{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "HOSTNAME=vm", "HOME=/root"}));
}

TEST(ContainerEnvironment, TheImagesEnvWins) {
  EXPECT_EQ(container_environment(
                {"PATH=/opt/bin", "HOME=/data", "HOSTNAME=fixed", "A=1", "A=2", "EMPTY=", "BARE"},
                "vm", "/root"),
            (Argv{"HOSTNAME=fixed", "PATH=/opt/bin", "HOME=/data", "A=2", "EMPTY=", "BARE"}));
}

TEST(ContainerEnvironment, OverridesComeLast) {
  EXPECT_EQ(container_environment({"PATH=/bin", "A=1"}, "vm", "/home/app", {"A=3", "B=x y"}),
            (Argv{"HOSTNAME=vm", "PATH=/bin", "A=3", "HOME=/home/app", "B=x y"}));
}

TEST(EnvValue, LastOneWins) {
  EXPECT_EQ(env_value({"A=1", "B=2", "A=3"}, "A"), "3");
  EXPECT_EQ(env_value({"A=", "AB=1"}, "A"), "");
  EXPECT_EQ(env_value({"AB=1", "A"}, "A"), std::nullopt);
}

}  // namespace
}  // namespace imagefs::init
