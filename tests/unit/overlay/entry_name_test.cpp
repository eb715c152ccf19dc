// Cleaning and whiteout classification of layer entry names.
#include "overlay/entry_name.h"

#include <gtest/gtest.h>

namespace imagefs::overlay {
namespace {

EntryName parse(std::string_view raw) {
  Result<EntryName> r = parse_entry_name(raw);
  EXPECT_TRUE(r.ok()) << raw;
  return r.ok() ? *r : EntryName{};
}

TEST(EntryName, CleansPaths) {
  EXPECT_EQ(parse("./usr/bin/ls").path, "usr/bin/ls");
  EXPECT_EQ(parse("/etc//passwd").path, "etc/passwd");
  EXPECT_EQ(parse("usr/lib/").path, "usr/lib");
  EXPECT_EQ(parse("a/./b/../c").path, "a/c");
}

TEST(EntryName, NeverLeavesTheRoot) {
  EXPECT_EQ(parse("../../etc/shadow").path, "etc/shadow");
  EXPECT_EQ(parse("/../x").path, "x");
  EXPECT_EQ(parse("a/../../b").path, "b");
}

TEST(EntryName, Root) {
  EXPECT_EQ(parse("./").kind, NameKind::root);
  EXPECT_EQ(parse("/").kind, NameKind::root);
  EXPECT_EQ(parse("..").kind, NameKind::root);
}

TEST(EntryName, Whiteouts) {
  EntryName w = parse("./etc/.wh.motd");
  EXPECT_EQ(w.kind, NameKind::whiteout);
  EXPECT_EQ(w.path, "etc/motd");
  EntryName top = parse(".wh.opt");
  EXPECT_EQ(top.kind, NameKind::whiteout);
  EXPECT_EQ(top.path, "opt");
  EntryName opq = parse("var/cache/.wh..wh..opq");
  EXPECT_EQ(opq.kind, NameKind::opaque);
  EXPECT_EQ(opq.path, "var/cache");
  EntryName root_opq = parse(".wh..wh..opq");
  EXPECT_EQ(root_opq.kind, NameKind::opaque);
  EXPECT_EQ(root_opq.path, "");
  EntryName bare = parse("dir/.wh.");
  EXPECT_EQ(bare.kind, NameKind::bare_whiteout);
  EXPECT_EQ(bare.path, "dir");
}

TEST(EntryName, NotWhiteouts) {
  EXPECT_EQ(parse("a/.whiteout").kind, NameKind::path);
  EXPECT_EQ(parse("a/x.wh.y").kind, NameKind::path);
  EXPECT_EQ(parse(".wh.dir/file").kind, NameKind::path);  // only the last component counts
}

TEST(EntryName, Rejects) {
  EXPECT_FALSE(parse_entry_name("").ok());
  EXPECT_FALSE(parse_entry_name(std::string_view("a\0b", 3)).ok());
  EXPECT_EQ(parse_entry_name(std::string_view("a\0b", 3)).error().code, EINVAL);
}

}  // namespace
}  // namespace imagefs::overlay
