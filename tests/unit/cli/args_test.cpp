// Option parsing, sizes, and the plain progress output.
#include "cli/args.h"

#include <gtest/gtest.h>

#include <sstream>

#include "cli/progress.h"

namespace imagefs::cli {
namespace {

const std::vector<OptionSpec> kSpecs = {
    {"platform", Arity::value, "platform", "OS/ARCH"},
    {"inject", Arity::repeated, "inject", "HOST:GUEST"},
    {"foreground", Arity::flag, "stay in the foreground", "", 'f'},
};

TEST(Args, ValuesFlagsAndPositionals) {
  auto args = parse_args({"a", "--platform", "linux/arm64", "-f", "--inject=x:/y", "--inject",
                          "z:/w", "b", "--", "--not-an-option"},
                         kSpecs);
  ASSERT_TRUE(args.ok()) << args.error().message;
  EXPECT_EQ(args->get("platform"), "linux/arm64");
  EXPECT_TRUE(args->has("foreground"));
  EXPECT_EQ(args->all("inject"), (std::vector<std::string>{"x:/y", "z:/w"}));
  EXPECT_EQ(args->positional(), (std::vector<std::string>{"a", "b", "--not-an-option"}));
  EXPECT_EQ(args->get("missing"), std::nullopt);
}

TEST(Args, LastValueWins) {
  auto args = parse_args({"--platform=a", "--platform=b"}, kSpecs);
  ASSERT_TRUE(args.ok());
  EXPECT_EQ(args->get("platform"), "b");
}

TEST(Args, ErrorsNameTheOption) {
  auto unknown = parse_args({"--nope"}, kSpecs);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().message, "unknown option --nope");
  auto missing = parse_args({"--platform"}, kSpecs);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("--platform needs a value (OS/ARCH)"), std::string::npos);
  EXPECT_FALSE(parse_args({"--foreground=1"}, kSpecs).ok());
  EXPECT_FALSE(parse_args({"-x"}, kSpecs).ok());
}

TEST(Args, Describe) {
  std::string text = describe_options(kSpecs);
  EXPECT_NE(text.find("--platform OS/ARCH"), std::string::npos);
  EXPECT_NE(text.find("-f, --foreground"), std::string::npos);
  EXPECT_NE(text.find("(repeatable)"), std::string::npos);
}

TEST(Size, Parse) {
  EXPECT_EQ(*parse_size("1000"), 1000u);
  EXPECT_EQ(*parse_size("1k"), 1024u);
  EXPECT_EQ(*parse_size("10G"), 10ull << 30);
  EXPECT_EQ(*parse_size("512MiB"), 512ull << 20);
  EXPECT_EQ(*parse_size("1.5g"), 3ull << 29);
  EXPECT_EQ(*parse_size("2TB"), 2ull << 40);
  for (const char* bad : {"", "G", "10X", "1.2.3", "-5", "10 G", "1e30T"})
    EXPECT_FALSE(parse_size(bad).ok()) << bad;
}

TEST(Size, Format) {
  EXPECT_EQ(format_size(17), "17 B");
  EXPECT_EQ(format_size(1536), "1.5 KiB");
  EXPECT_EQ(format_size(300ull << 20), "300 MiB");
  EXPECT_EQ(format_size(3ull << 30), "3.0 GiB");
}

TEST(Progress, PlainLinesWhenNotATerminal) {
  std::ostringstream out;
  {
    ProgressView view(out, false);
    size_t a = view.start("layer a", 2048);
    size_t b = view.start("layer b", 0);
    view.update(a, 1024);
    view.end(a, ItemEnd::done);
    view.end(b, ItemEnd::cached);
    view.add_finished("layer c", 10, ItemEnd::cached);
    view.message("pulled");
  }
  std::string text = out.str();
  EXPECT_EQ(text.find('\033'), std::string::npos) << "no escape codes off a terminal";
  EXPECT_NE(text.find("layer a: downloading 2.0 KiB\n"), std::string::npos) << text;
  EXPECT_NE(text.find("layer a: done 2.0 KiB in "), std::string::npos) << text;
  EXPECT_NE(text.find("layer b: already present\n"), std::string::npos) << text;
  EXPECT_NE(text.find("pulled\n"), std::string::npos);
  EXPECT_EQ(text.find("layer c: downloading"), std::string::npos) << "finished items get one line";
  EXPECT_NE(text.find("layer c: already present\n"), std::string::npos) << text;
}

TEST(Size, Plural) {
  EXPECT_EQ(plural(0, "segment"), "0 segments");
  EXPECT_EQ(plural(1, "segment"), "1 segment");
  EXPECT_EQ(plural(19, "segment"), "19 segments");
}

}  // namespace
}  // namespace imagefs::cli
