#include "io/output_path.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "base/error.h"
#include "base/log.h"

namespace sickle {
namespace fs = std::filesystem;

namespace {

struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const FileId&) const = default;
};

// The file `p` names, symlinks followed; nullopt if it does not exist (or cannot be reached).
std::optional<FileId> id_of(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return std::nullopt;
  return FileId{st.st_dev, st.st_ino};
}

// Absolute, symlinks resolved in the part that exists, the rest appended with `..` folded.
fs::path resolved(const fs::path& p) {
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec);
  if (ec) abs = p;
  fs::path r = fs::weakly_canonical(abs, ec);
  return ec ? abs.lexically_normal() : r;
}

// `p` without a trailing separator ("out/" names the directory out).
fs::path strip_slash(fs::path p) {
  if (p.filename().empty() && p.has_parent_path() && p.has_relative_path()) p = p.parent_path();
  return p;
}

// The existing files on the way from `r` (resolved) up to the root: r itself first when it exists.
struct Step {
  fs::path path;
  FileId id;
};
std::vector<Step> chain(const fs::path& r) {
  std::vector<Step> out;
  for (fs::path p = r;; p = p.parent_path()) {
    if (auto id = id_of(p)) out.push_back({p, *id});
    if (!p.has_relative_path()) break;
  }
  return out;
}

bool contains_id(const std::vector<Step>& c, FileId id) {
  return std::any_of(c.begin(), c.end(), [&](const Step& s) { return s.id == id; });
}

// A file or directory inside a directory input (recursively; symlinks followed to what they name).
struct Entry {
  fs::path path;
  FileId id;
  bool is_dir = false, is_link = false;
};
std::vector<Entry> entries_of(const fs::path& dir) {
  std::vector<Entry> out;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    auto id = id_of(it->path());
    if (!id) continue;
    std::error_code e2;
    out.push_back({it->path(), *id, fs::is_directory(it->path(), e2), it->is_symlink(e2)});
  }
  return out;
}

// ".<name>.tmp-": what every temp of the output <name> starts with (6 random characters follow).
std::string temp_prefix(const std::string& name) {
  std::string p;  // appended, not `"." + name`: GCC 12 warns (-Wstringop-overflow) on that
  p.append(".").append(name).append(".tmp-");
  return p;
}

bool is_temp_suffix(std::string_view s) {
  return s.size() == 6 &&
         std::all_of(s.begin(), s.end(), [](char c) { return std::isalnum((unsigned char)c) != 0; });
}

// Opens `p` (not following a final symlink) and tries to take its lock. Returns the fd holding
// the lock, -1 if another process holds it (or it cannot be opened: errno says which).
int try_lock(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return -1;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

uint64_t bytes_under(const fs::path& p) {
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(p, ec))) {
    auto n = fs::file_size(p, ec);
    return ec ? 0 : n;
  }
  uint64_t n = 0;
  fs::recursive_directory_iterator it(p, fs::directory_options::skip_permission_denied, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::error_code e2;
    if (it->is_regular_file(e2) && !it->is_symlink(e2)) n += it->file_size(e2);
  }
  return n;
}

}  // namespace

void check_output(const fs::path& out_arg, OutputKind kind, bool force,
                  const std::vector<OutputInput>& inputs, std::string_view flag) {
  if (out_arg.empty()) fail("{}: empty output path", flag);
  const fs::path out = strip_slash(out_arg);
  const fs::path rout = resolved(out);
  const std::vector<Step> ochain = chain(rout);  // ochain[0] is the output itself when it exists
  const std::optional<FileId> oid = id_of(rout);
  // Name the resolved path too when a symlink (not just `.` or `..`) moved it.
  const bool moved = rout != strip_slash(fs::absolute(out).lexically_normal());
  const std::string shown =
      fmt::format("{} {}{}", flag, out_arg.string(), moved ? " (= " + rout.string() + ")" : "");
  auto refuse = [&](std::string_view rel, std::string_view whose, const OutputInput& in,
                    const std::string& detail) {
    fail("{}: the output {} {}{} {}{}; an output must not be, contain or lie inside an input", shown, rel,
         whose, in.what, in.path.string(), detail);
  };
  for (const auto& in : inputs) {
    const auto iid = id_of(in.path);
    if (!iid) continue;
    // The output is the input, or lies inside it.
    for (const auto& s : ochain)
      if (s.id == *iid) refuse(s.path == rout ? "is" : "lies inside", "the ", in, "");
    std::vector<Entry> entries;
    std::error_code ec;
    if (fs::is_directory(in.path, ec)) entries = entries_of(in.path);
    // ... or is (or lies inside) a file of a directory input: a hard link, or the target of a
    // symlink in it (snapshots -> blobs).
    for (const auto& e : entries)
      for (const auto& s : ochain)
        if (s.id == e.id)
          refuse(s.path == rout ? "is" : "lies inside", e.is_dir ? "a directory of the " : "a file of the ",
                 in, " (" + e.path.string() + ")");
    // The output exists and contains the input (or what one of its symlinks names): --force
    // would delete it.
    if (oid) {
      if (contains_id(chain(resolved(in.path)), *oid))
        refuse("contains", "the ", in, " (--force would delete it)");
      for (const auto& e : entries)
        if (e.is_link && contains_id(chain(resolved(e.path)), *oid))
          refuse("contains", e.is_dir ? "a directory of the " : "a file of the ", in,
                 " (" + e.path.string() + "; --force would delete it)");
    }
  }
  std::error_code ec;
  const fs::file_status st = fs::status(rout, ec);
  if (fs::exists(st)) {
    if (kind == OutputKind::kFile && fs::is_directory(st))
      fail("{}: is a directory (the output is a file: give its path)", shown);
    if (kind == OutputKind::kFile && !fs::is_regular_file(st))
      fail("{}: is not a regular file (only a regular file is replaced)", shown);
    if (kind == OutputKind::kDirectory && !fs::is_directory(st))
      fail("{}: is not a directory (the output is a directory; --force replaces only a directory)", shown);
    if (!force) fail("{}: already exists (pass --force to replace it)", shown);
  }
  const fs::path parent = rout.parent_path();
  const fs::file_status pst = fs::status(parent, ec);
  if (!fs::exists(pst)) fail("{}: the directory {} does not exist", shown, parent.string());
  if (!fs::is_directory(pst)) fail("{}: {} is not a directory", shown, parent.string());
}

int remove_stale_temps(const fs::path& out_arg) {
  const fs::path out = strip_slash(out_arg);
  const std::string name = out.filename().string();
  if (name.empty() || name == "." || name == "..") return 0;
  const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
  const std::string prefix = temp_prefix(name);
  struct Candidate {
    fs::path path, lock;  // `lock`: whose lock says a live writer owns it
  };
  std::vector<Candidate> cands;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string f = it->path().filename().string();
    if (f.compare(0, prefix.size(), prefix) != 0) continue;
    std::string_view rest = std::string_view(f).substr(prefix.size());
    const bool old = rest.size() == 10 && rest.substr(6) == ".old";
    if (!is_temp_suffix(rest.substr(0, old ? 6 : rest.size()))) continue;
    std::error_code e2;
    const fs::file_status st = it->symlink_status(e2);
    if (!fs::is_directory(st) && !fs::is_regular_file(st)) continue;  // never ours
    fs::path base = dir / f.substr(0, prefix.size() + 6);
    cands.push_back({it->path(), old && fs::exists(fs::symlink_status(base, e2)) ? base : it->path()});
  }
  int removed = 0;
  for (const auto& c : cands) {
    int fd = try_lock(c.lock);
    if (fd < 0) {
      if (errno == EWOULDBLOCK)
        log_warn("{}: a temp output in use by another process (locked): left in place", c.path.string());
      else
        log_warn("{}: cannot check whether a temp output is in use ({}): left in place", c.path.string(),
                 std::strerror(errno));
      continue;
    }
    const uint64_t bytes = bytes_under(c.path);
    std::error_code e2;
    fs::remove_all(c.path, e2);
    ::close(fd);
    if (e2) {
      log_warn("{}: cannot remove stale temp output: {}", c.path.string(), e2.message());
      continue;
    }
    log_warn("removed stale temp output {} ({}) left by an interrupted run", c.path.string(),
             format_bytes(double(bytes)));
    ++removed;
  }
  return removed;
}

TempOutput::TempOutput(fs::path out, OutputKind kind) : out_(strip_slash(std::move(out))), kind_(kind) {
  const fs::path parent = out_.has_parent_path() ? out_.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) fail("{}: parent directory does not exist", parent.string());
  remove_stale_temps(out_);
  std::string tmpl = (parent / (temp_prefix(out_.filename().string()) + "XXXXXX")).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  mode_t mask = ::umask(0);
  ::umask(mask);
  if (kind_ == OutputKind::kDirectory) {
    if (!::mkdtemp(buf.data())) fail("{}: cannot create temporary directory: {}", tmpl, std::strerror(errno));
    path_ = buf.data();
    fd_ = ::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  } else {
    fd_ = ::mkostemp(buf.data(), O_CLOEXEC);
    if (fd_ < 0) fail("{}: cannot create temporary file: {}", tmpl, std::strerror(errno));
    path_ = buf.data();
  }
  if (fd_ < 0 || ::flock(fd_, LOCK_EX) != 0) {
    int e = errno;
    std::error_code e2;
    fs::remove_all(path_, e2);
    fail("{}: cannot lock: {}", path_.string(), std::strerror(e));
  }
  // mkdtemp/mkstemp make 0700/0600; the output gets the usual permissions (umask).
  ::fchmod(fd_, (kind_ == OutputKind::kDirectory ? 0777 : 0666) & ~mask);
}

TempOutput::~TempOutput() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  if (fd_ >= 0) ::close(fd_);
}

void TempOutput::commit(bool replace) {
  SICKLE_CHECK(!committed_);
  std::error_code ec;
  const bool exists = fs::exists(fs::symlink_status(out_, ec));
  if (exists && !replace) fail("{}: already exists (pass --force to replace it)", out_.string());
  if (exists && kind_ == OutputKind::kDirectory) {
    // A directory cannot be renamed over a non-empty one: move the old output aside first so
    // a crash between the steps never loses both (the next run removes what is left aside).
    const fs::path old = path_.string() + ".old";
    fs::rename(out_, old, ec);
    if (ec) fail("{}: cannot move existing output aside: {}", out_.string(), ec.message());
    fs::rename(path_, out_, ec);
    if (ec) {
      std::error_code back;
      fs::rename(old, out_, back);
      fail("{}: cannot rename {} into place: {}", out_.string(), path_.string(), ec.message());
    }
    fs::remove_all(old, ec);
  } else {
    fs::rename(path_, out_, ec);
    if (ec) fail("{}: cannot rename {} into place: {}", out_.string(), path_.string(), ec.message());
  }
  committed_ = true;
  ::close(fd_);
  fd_ = -1;
}

}  // namespace sickle
