// sickle/io/output_path.h — the one rule for what a command writes, and the temp outputs every
// writer uses.
//
// check_output(): every command that writes calls it before any work. The output, and whatever
// --force would delete (the output and, for a directory, everything in it), must not be, lie
// inside or contain any input: the model directory and every file in it (a file that is a
// symlink counts where it points, as in the Hugging Face cache's snapshots -> blobs), teacher,
// statistics, data, template files. Paths are compared as the filesystem resolves them: the
// output and each of its existing ancestors by device and inode against the inputs, so
// symlinks, `..`, relative paths, bind mounts and hard links cannot hide an input. It also
// refuses an output of the wrong kind (a directory where a file is written or the reverse), an
// existing one without --force, and a missing parent directory.
//
// TempOutput: work in progress lives in `<dir>/.<name>.tmp-XXXXXX` (mkdtemp/mkstemp) beside the
// output `<dir>/<name>`, locked (flock) for as long as its writer lives, renamed into place by
// commit() and removed otherwise. A directory being replaced is first moved aside to
// `.<name>.tmp-XXXXXX.old`. What a killed run leaves is removed by the next TempOutput for the
// same target (remove_stale_temps), which logs each path and size; a temp some live process
// holds locked, and every name that is not exactly this pattern for this target, is kept.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace sickle {

enum class OutputKind { kFile, kDirectory };

struct OutputInput {
  std::string what;            // how errors name it: "model directory", "--stats file", "--data file"
  std::filesystem::path path;  // a file or a directory; one that does not exist is skipped
};

// Throws Error (one line naming `flag`, the output and the input at fault) if the rule above is
// broken. `force`: an existing output (of the right kind) may be replaced.
void check_output(const std::filesystem::path& out, OutputKind kind, bool force,
                  const std::vector<OutputInput>& inputs, std::string_view flag = "-o");

// Removes stale temp outputs of `out` (see above); returns how many were removed.
int remove_stale_temps(const std::filesystem::path& out);

class TempOutput {
 public:
  // Removes stale temps of `out`, then creates this one (a directory, or an empty file open for
  // writing at fd()). Throws Error if the parent directory cannot hold it.
  TempOutput(std::filesystem::path out, OutputKind kind);
  ~TempOutput();  // removes the temp unless committed
  TempOutput(const TempOutput&) = delete;
  TempOutput& operator=(const TempOutput&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // A file temp: the descriptor to write to (the caller fsyncs; the temp closes it). A directory
  // temp: a descriptor of the directory that holds the lock.
  int fd() const { return fd_; }
  // Renames the temp onto the output. An existing output is an Error unless `replace`; a
  // directory is then moved aside first and removed after, so a crash never loses both.
  void commit(bool replace);

 private:
  std::filesystem::path out_, path_;
  OutputKind kind_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace sickle
