// The output rule (check_output) and temp outputs (TempOutput, remove_stale_temps): an output
// is never, inside, or around an input however the paths are spelled (symlinks, `..`, relative
// paths, hard links, a model file that is a symlink into a blob store); temps of a killed run
// are removed, a live writer's (flock) and look-alike names are not.
#include "io/output_path.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>

#include "base/error.h"
#include "base/test_temp_dir.h"

namespace sickle {
namespace {
namespace fs = std::filesystem;

void write(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class OutputRule : public ::testing::Test {
 protected:
  test_util::TempDir t{"sickle-outpath-test"};
  fs::path root, model, data;
  void SetUp() override {
    root = t.path;
    model = root / "DIR" / "model";
    data = root / "DIR" / "calib.txt";
    write(model / "config.json", "{}");
    write(model / "model.safetensors", "weights");
    write(data, "text");
  }
  std::vector<OutputInput> inputs() const { return {{"model directory", model}, {"--data file", data}}; }
  // The error of check_output ("" when accepted).
  std::string error_of(const fs::path& out, OutputKind kind = OutputKind::kDirectory, bool force = true) {
    try {
      check_output(out, kind, force, inputs(), "-o");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  static bool has(const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos;
  }
};

TEST_F(OutputRule, OutputIsAnInput) {
  std::string m = error_of(data, OutputKind::kFile);
  EXPECT_TRUE(has(m, "the output is the --data file " + data.string())) << m;
  EXPECT_TRUE(has(m, "must not be, contain or lie inside an input")) << m;
  m = error_of(model);
  EXPECT_TRUE(has(m, "the output is the model directory")) << m;
  // Refused with or without --force (the input message, not "already exists").
  m = error_of(data, OutputKind::kFile, /*force=*/false);
  EXPECT_TRUE(has(m, "the output is the --data file")) << m;
}

TEST_F(OutputRule, OutputInsideAnInput) {
  std::string m = error_of(model / "sub");
  EXPECT_TRUE(has(m, "-o " + (model / "sub").string())) << m;
  EXPECT_TRUE(has(m, "lies inside the model directory " + model.string())) << m;
  // Deeper, through directories that do not exist yet.
  EXPECT_TRUE(has(error_of(model / "a" / "b" / "c"), "lies inside")) << error_of(model / "a" / "b" / "c");
  // A file of the model directory is inside it.
  EXPECT_TRUE(
      has(error_of(model / "model.safetensors", OutputKind::kFile), "lies inside the model directory"));
}

TEST_F(OutputRule, OutputContainsAnInput) {
  std::string m = error_of(root / "DIR");
  EXPECT_TRUE(has(m, "contains the model directory " + model.string())) << m;
  EXPECT_TRUE(has(m, "--force would delete it")) << m;
  EXPECT_TRUE(has(error_of(root), "contains")) << error_of(root);
}

TEST_F(OutputRule, SymlinksAndDotDotResolve) {
  fs::create_directory_symlink(model, root / "link");
  std::string m = error_of(root / "link" / "sub");
  EXPECT_TRUE(has(m, "lies inside the model directory")) << m;
  EXPECT_TRUE(has(error_of(root / "link"), "is the model directory")) << error_of(root / "link");
  EXPECT_TRUE(has(error_of(model / ".." / "model"), "is the model directory"))
      << error_of(model / ".." / "model");
  EXPECT_TRUE(has(error_of(model / "x" / ".." / ".." / "model" / "y"), "lies inside"));
  // A symlinked parent of the output.
  fs::create_directory_symlink(root / "DIR", root / "dirlink");
  EXPECT_TRUE(has(error_of(root / "dirlink" / "calib.txt", OutputKind::kFile), "is the --data file"));
}

TEST_F(OutputRule, RelativePaths) {
  fs::path cwd = fs::current_path();
  fs::current_path(root / "DIR");
  std::string in_model, beside;
  try {
    check_output("model/sub", OutputKind::kDirectory, true, {{"model directory", "model"}}, "-o");
  } catch (const Error& e) {
    in_model = e.what();
  }
  try {
    check_output("../DIR/model", OutputKind::kDirectory, true, {{"model directory", "./model/"}}, "-o");
  } catch (const Error& e) {
    beside = e.what();
  }
  fs::current_path(cwd);
  EXPECT_TRUE(has(in_model, "-o model/sub")) << in_model;
  EXPECT_TRUE(has(in_model, "the output lies inside the model directory model;")) << in_model;
  EXPECT_TRUE(has(beside, "is the model directory")) << beside;
}

TEST_F(OutputRule, HardLinkOfAnInputFile) {
  fs::create_hard_link(model / "model.safetensors", root / "hard.safetensors");
  fs::create_hard_link(data, root / "hard.txt");
  EXPECT_TRUE(has(error_of(root / "hard.safetensors", OutputKind::kFile), "is a file of the model directory"))
      << error_of(root / "hard.safetensors", OutputKind::kFile);
  EXPECT_TRUE(has(error_of(root / "hard.txt", OutputKind::kFile), "is the --data file"));
}

TEST_F(OutputRule, ModelFileSymlinkedIntoABlobStore) {
  // The Hugging Face cache layout: snapshots/<rev>/model.safetensors -> ../../blobs/<hash>.
  write(root / "blobs" / "abc123", "blob");
  fs::create_symlink(root / "blobs" / "abc123", model / "weights.safetensors");
  std::string m = error_of(root / "blobs" / "abc123", OutputKind::kFile);
  EXPECT_TRUE(has(m, "is a file of the model directory")) << m;
  m = error_of(root / "blobs");
  EXPECT_TRUE(has(m, "contains a file of the model directory")) << m;
}

TEST_F(OutputRule, UnrelatedPathsAreFine) {
  EXPECT_EQ(error_of(root / "DIR" / "model2"), "");  // shares a prefix, is not inside
  EXPECT_EQ(error_of(root / "DIR" / "model.gguf", OutputKind::kFile), "");
  EXPECT_EQ(error_of(root / "DIR" / "calib.txt.st", OutputKind::kFile), "");
  // An input that does not exist is not compared (the command reports it when it opens it).
  check_output(root / "out", OutputKind::kDirectory, false, {{"--stats file", root / "missing.st"}}, "-o");
}

TEST_F(OutputRule, KindExistenceAndParent) {
  fs::create_directory(root / "adir");
  write(root / "afile", "x");
  std::string m = error_of(root / "adir", OutputKind::kFile);
  EXPECT_TRUE(has(m, "adir: is a directory")) << m;
  EXPECT_TRUE(has(error_of(root / "afile", OutputKind::kDirectory), "afile: is not a directory"));
  EXPECT_TRUE(
      has(error_of(root / "afile", OutputKind::kFile, false), "already exists (pass --force to replace it)"));
  EXPECT_EQ(error_of(root / "afile", OutputKind::kFile, true), "");
  EXPECT_TRUE(has(error_of(root / "nope" / "out"), "does not exist")) << error_of(root / "nope" / "out");
  EXPECT_TRUE(has(error_of(root / "afile" / "out"), "is not a directory"))
      << error_of(root / "afile" / "out");
  EXPECT_EQ(error_of(root / "newdir/"), "");  // a trailing slash names the directory
}

class TempOutputs : public ::testing::Test {
 protected:
  test_util::TempDir t{"sickle-tempout-test"};
  fs::path out() const { return t.path / "p"; }
  std::vector<std::string> entries() const {
    std::vector<std::string> v;
    for (const auto& e : fs::directory_iterator(t.path)) v.push_back(e.path().filename().string());
    std::sort(v.begin(), v.end());
    return v;
  }
};

TEST_F(TempOutputs, DirectoryTempCommitsAndReplaces) {
  {
    TempOutput tmp(out(), OutputKind::kDirectory);
    EXPECT_EQ(tmp.path().parent_path(), t.path);
    EXPECT_EQ(tmp.path().filename().string().rfind(".p.tmp-", 0), 0u) << tmp.path();
    EXPECT_EQ(tmp.path().filename().string().size(), std::string(".p.tmp-XXXXXX").size());
    write(tmp.path() / "a", "1");
    tmp.commit(/*replace=*/false);
  }
  EXPECT_EQ(read(out() / "a"), "1");
  {
    TempOutput tmp(out(), OutputKind::kDirectory);
    write(tmp.path() / "b", "2");
    EXPECT_THROW(tmp.commit(false), Error);  // exists: only with replace
    tmp.commit(true);
  }
  EXPECT_FALSE(fs::exists(out() / "a"));
  EXPECT_EQ(read(out() / "b"), "2");
  EXPECT_EQ(entries(), std::vector<std::string>{"p"});
}

TEST_F(TempOutputs, FileTempCommitsOrIsRemoved) {
  {
    TempOutput tmp(t.path / "f.gguf", OutputKind::kFile);
    ASSERT_GE(tmp.fd(), 0);
    ASSERT_EQ(::write(tmp.fd(), "xyz", 3), 3);
    tmp.commit(false);
  }
  EXPECT_EQ(read(t.path / "f.gguf"), "xyz");
  {
    TempOutput tmp(t.path / "f.gguf", OutputKind::kFile);
    ASSERT_EQ(::write(tmp.fd(), "q", 1), 1);
  }  // not committed: removed, the old output untouched
  EXPECT_EQ(read(t.path / "f.gguf"), "xyz");
  EXPECT_EQ(entries(), std::vector<std::string>{"f.gguf"});
}

TEST_F(TempOutputs, StaleTempsOfTheTargetAreRemovedOthersKept) {
  write(t.path / ".p.tmp-Ab3dE9" / "shard-0.part", std::string(1000, 'x'));
  write(t.path / ".p.tmp-Zz0000.old" / "config.json", "old");
  write(t.path / ".p.tmp-fIle00", "a stale temp file");
  const std::vector<std::string> keep = {".p.tmp-short",
                                         ".q.tmp-Ab3dE9",
                                         "p.tmp-Ab3dE9",
                                         ".p.tmp-Ab3dE9x",
                                         ".p.tmp-Ab3d-9",
                                         ".pp.tmp-Ab3dE9",
                                         "p"};
  for (const auto& k : keep) write(t.path / k / "f", "keep");
  // A live writer's temp (locked) and the old output it moved aside are kept.
  write(t.path / ".p.tmp-L1ve00" / "f", "live");
  write(t.path / ".p.tmp-L1ve00.old" / "f", "live's old output");
  int fd = ::open((t.path / ".p.tmp-L1ve00").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  EXPECT_EQ(remove_stale_temps(out()), 3);
  ::close(fd);
  std::vector<std::string> expect = keep;
  expect.push_back(".p.tmp-L1ve00");
  expect.push_back(".p.tmp-L1ve00.old");
  std::sort(expect.begin(), expect.end());
  EXPECT_EQ(entries(), expect);
  // Unlocked now: the next run removes it.
  EXPECT_EQ(remove_stale_temps(out()), 2);
}

TEST_F(TempOutputs, CreatingATempRemovesStaleOnesButNotItself) {
  write(t.path / ".p.tmp-Ab3dE9" / "x", "stale");
  TempOutput a(out(), OutputKind::kDirectory);
  EXPECT_FALSE(fs::exists(t.path / ".p.tmp-Ab3dE9"));
  TempOutput b(out(), OutputKind::kDirectory);  // a second writer of the same target: a is live
  EXPECT_TRUE(fs::is_directory(a.path()));
  EXPECT_TRUE(fs::is_directory(b.path()));
}

}  // namespace
}  // namespace sickle
