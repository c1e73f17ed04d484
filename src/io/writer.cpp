#include "io/writer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "base/error.h"
#include "base/hash.h"
#include "io/output_path.h"

namespace sickle {
namespace fs = std::filesystem;
using json = nlohmann::json;

size_t TensorSource::size() const {
  if (produce || generate) return lazy_size;
  size_t n = 0;
  for (const auto& c : chunks) n += c.size;
  return n;
}

TensorSource TensorSource::from_file(const SafetensorsFile& file, const TensorInfo& info) {
  TensorSource s;
  ByteChunk c;
  c.ptr = file.file().data() + file.data_offset() + info.begin;
  c.size = info.nbytes();
  c.src_fd = file.file().fd();
  c.src_offset = file.data_offset() + info.begin;
  s.chunks.push_back(c);
  return s;
}

TensorSource TensorSource::rows_from_file(const SafetensorsFile& file, const TensorInfo& info,
                                          const std::vector<int64_t>& rows) {
  SICKLE_CHECK(!info.shape.empty());
  int64_t n_rows = info.shape[0];
  size_t row_bytes = n_rows ? info.nbytes() / size_t(n_rows) : 0;
  TensorSource s;
  for (int64_t r : rows) {
    SICKLE_CHECK(r >= 0 && r < n_rows, "row {} of {} in {}", r, n_rows, info.name);
    uint64_t off = file.data_offset() + info.begin + uint64_t(r) * row_bytes;
    if (!s.chunks.empty() && s.chunks.back().src_offset + s.chunks.back().size == off) {
      s.chunks.back().size += row_bytes;  // merge adjacent rows into one run
      continue;
    }
    s.chunks.push_back(ByteChunk{file.file().data() + off, row_bytes, file.file().fd(), off});
  }
  return s;
}

TensorSource TensorSource::from_bytes(std::vector<std::byte> bytes) {
  auto owned = std::make_shared<std::vector<std::byte>>(std::move(bytes));
  TensorSource s;
  s.chunks.push_back(ByteChunk{owned->data(), owned->size(), -1, 0});
  s.keepalive = owned;
  return s;
}

TensorSource TensorSource::generated(size_t size,
                                     std::function<void(uint64_t, std::byte*, size_t)> generate) {
  TensorSource s;
  s.lazy_size = size;
  s.generate = std::move(generate);
  return s;
}

TensorSource TensorSource::lazy(size_t size, std::function<std::vector<std::byte>()> produce) {
  TensorSource s;
  s.lazy_size = size;
  s.produce = std::move(produce);
  return s;
}

CheckpointWriter::CheckpointWriter(fs::path out_dir, WriterOptions options)
    : out_dir_(std::move(out_dir)), opt_(std::move(options)) {
  if (out_dir_.filename().empty()) out_dir_ = out_dir_.parent_path();  // tolerate trailing '/'
  std::error_code ec;
  if (fs::exists(out_dir_, ec) && !opt_.force)
    fail("{}: output already exists (pass --force to replace it)", out_dir_.string());
  tmp_ = std::make_unique<TempOutput>(out_dir_, OutputKind::kDirectory);
  tmp_dir_ = tmp_->path();
  if (const char* f = std::getenv("SICKLE_FAULT_ENOSPC_AFTER")) fault_enospc_after_ = std::atoll(f);
}

CheckpointWriter::~CheckpointWriter() = default;  // an uncommitted temp dir is removed by tmp_

void CheckpointWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                           TensorSource source) {
  SICKLE_CHECK(!committed_);
  if (tensor_shard_.count(name)) fail("{}: tensor '{}' added twice", out_dir_.string(), name);
  for (const auto& p : pending_)
    if (p.name == name) fail("{}: tensor '{}' added twice", out_dir_.string(), name);
  int64_t numel = 1;
  for (auto d : shape) numel *= d;
  size_t expect = size_t(numel) * dtype_size(dtype);
  if (source.size() != expect)
    fail("{}: tensor '{}': source has {} bytes, shape {} x {} needs {}", out_dir_.string(), name,
         source.size(), shape_to_string(shape), dtype_name(dtype), expect);
  if (!pending_.empty() && pending_bytes_ + expect > opt_.max_shard_bytes) flush_shard();
  pending_bytes_ += expect;
  pending_.push_back(Pending{name, dtype, std::move(shape), std::move(source)});
}

void CheckpointWriter::write_all(int fd, const std::string& file, const void* p, size_t n) {
  auto c = static_cast<const char*>(p);
  while (n > 0) {
    size_t step = std::min<size_t>(n, 64u << 20);
    if (fault_enospc_after_ >= 0 && bytes_written_ + step > uint64_t(fault_enospc_after_)) {
      fail("{}: write failed: {} (simulated by SICKLE_FAULT_ENOSPC_AFTER)", file, std::strerror(ENOSPC));
    }
    ssize_t w = ::write(fd, c, step);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("{}: write failed: {}", file, std::strerror(errno));
    }
    c += w;
    n -= size_t(w);
    bytes_written_ += uint64_t(w);
  }
}

void CheckpointWriter::write_chunk(int fd, const std::string& file, const ByteChunk& chunk) {
  if (chunk.src_fd >= 0 && fault_enospc_after_ < 0) {
    loff_t in_off = loff_t(chunk.src_offset);
    size_t left = chunk.size;
    while (left > 0) {
      ssize_t w = ::copy_file_range(chunk.src_fd, &in_off, fd, nullptr, left, 0);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP) break;  // fall back
        fail("{}: copy failed: {}", file, std::strerror(errno));
      }
      if (w == 0) break;
      left -= size_t(w);
      bytes_written_ += uint64_t(w);
    }
    if (left == 0) return;
    write_all(fd, file, chunk.ptr + (chunk.size - left), left);
    return;
  }
  write_all(fd, file, chunk.ptr, chunk.size);
}

void CheckpointWriter::flush_shard() {
  if (pending_.empty()) return;
  size_t idx = shard_tmp_names_.size();
  std::string fname = "shard-" + std::to_string(idx) + ".part";
  fs::path path = tmp_dir_ / fname;
  json header = json::object();
  if (!opt_.metadata.empty()) header["__metadata__"] = opt_.metadata;
  uint64_t off = 0;
  for (const auto& p : pending_) {
    uint64_t n = p.source.size();
    header[p.name] = {
        {"dtype", std::string(dtype_name(p.dtype))}, {"shape", p.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string text = header.dump();
  while (text.size() % 8) text.push_back(' ');
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("{}: cannot create: {}", path.string(), std::strerror(errno));
  std::vector<std::byte> gen_buf;  // one chunk of a generated tensor
  try {
    uint64_t n = text.size();
    write_all(fd, path.string(), &n, 8);
    write_all(fd, path.string(), text.data(), text.size());
    for (auto& p : pending_) {
      if (p.source.produce) {
        std::vector<std::byte> bytes = p.source.produce();
        if (bytes.size() != p.source.lazy_size)
          fail("{}: tensor '{}': producer gave {} bytes, expected {}", path.string(), p.name, bytes.size(),
               p.source.lazy_size);
        write_all(fd, path.string(), bytes.data(), bytes.size());
        if (on_bytes) on_bytes(bytes.size());
      } else if (p.source.generate) {
        size_t total = p.source.lazy_size;
        if (gen_buf.size() < std::min(total, TensorSource::kGenerateChunk))
          gen_buf.resize(std::min(total, TensorSource::kGenerateChunk));
        for (size_t off = 0; off < total; off += TensorSource::kGenerateChunk) {
          size_t n = std::min(TensorSource::kGenerateChunk, total - off);
          p.source.generate(off, gen_buf.data(), n);
          write_all(fd, path.string(), gen_buf.data(), n);
          if (on_bytes) on_bytes(n);
        }
      } else {
        for (const auto& c : p.source.chunks) write_chunk(fd, path.string(), c);
        if (on_bytes) on_bytes(p.source.size());
      }
      tensor_shard_[p.name] = idx;
      order_.push_back(p.name);
      total_tensor_bytes_ += p.source.size();
    }
    if (::fsync(fd) != 0) fail("{}: fsync failed: {}", path.string(), std::strerror(errno));
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) fail("{}: close failed: {}", path.string(), std::strerror(errno));
  {
    // Re-read what landed and checksum it now, while the shard is in the page cache.
    auto f = SafetensorsFile::open(path);
    for (const auto& t : f->tensors()) {
      auto v = f->view(t);
      // Hash in steps and drop each step's pages from this mapping (they stay in the page
      // cache): a multi-GB shard must not count in the process's resident memory.
      Hasher h;
      const std::byte* p = v.data;
      for (size_t left = t.nbytes(); left > 0;) {
        size_t step = std::min<size_t>(left, 64u << 20);
        h.update(p, step);
        const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
        const uintptr_t a = uintptr_t(p) & ~(page - 1), b = uintptr_t(p + step) & ~(page - 1);
        if (b > a) ::madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED);
        p += step;
        left -= step;
      }
      landed_.push_back(
          WrittenTensor{t.name, std::to_string(idx), h.digest()});  // file: shard index until commit
    }
  }
  shard_tmp_names_.push_back(fname);
  pending_.clear();
  pending_bytes_ = 0;
}

void CheckpointWriter::copy_file(const fs::path& src, const std::string& rel_name) {
  std::error_code ec;
  fs::path dst = tmp_dir_ / rel_name;
  fs::create_directories(dst.parent_path(), ec);
  if (!fs::copy_file(src, dst, fs::copy_options::overwrite_existing, ec))
    fail("{}: cannot copy to {}: {}", src.string(), dst.string(), ec.message());
}

void CheckpointWriter::write_text(const std::string& rel_name, const std::string& content) {
  fs::path dst = tmp_dir_ / rel_name;
  std::error_code ec;
  fs::create_directories(dst.parent_path(), ec);
  int fd = ::open(dst.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("{}: cannot create: {}", dst.string(), std::strerror(errno));
  try {
    write_all(fd, dst.string(), content.data(), content.size());
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

std::vector<WrittenTensor> CheckpointWriter::commit() {
  SICKLE_CHECK(!committed_);
  flush_shard();
  size_t n = shard_tmp_names_.size();
  std::vector<std::string> final_names(n);
  for (size_t i = 0; i < n; ++i) {
    final_names[i] = (n == 1 && !opt_.always_index)
                         ? std::string("model.safetensors")
                         : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n);
    std::error_code ec;
    fs::rename(tmp_dir_ / shard_tmp_names_[i], tmp_dir_ / final_names[i], ec);
    if (ec) fail("{}: rename failed: {}", (tmp_dir_ / shard_tmp_names_[i]).string(), ec.message());
  }
  if (n > 1 || opt_.always_index || n == 0) {
    json index;
    index["metadata"] = {{"total_size", total_tensor_bytes_}};
    json wm = json::object();
    for (const auto& [name, shard] : tensor_shard_) wm[name] = final_names[shard];
    index["weight_map"] = wm;
    write_text("model.safetensors.index.json", index.dump(2) + "\n");
  }
  // Checksums of what landed, re-read from each shard right after it was flushed (while its
  // pages are still cached): callers compare against their sources.
  std::vector<WrittenTensor> out = std::move(landed_);
  for (auto& w : out) w.file = final_names[std::stoul(w.file)];
  tmp_->commit(opt_.force);
  committed_ = true;
  return out;
}

void write_safetensors_file(const std::filesystem::path& file,
                            const std::function<void(CheckpointWriter&)>& add) {
  TempOutput tmp(file, OutputKind::kDirectory);
  WriterOptions wo;
  wo.max_shard_bytes = ~0ull;
  CheckpointWriter w(tmp.path() / "out", wo);
  add(w);
  w.commit();
  std::error_code ec;
  std::filesystem::rename(tmp.path() / "out" / "model.safetensors", file, ec);
  if (ec) fail("{}: cannot write: {}", file.string(), ec.message());
}

}  // namespace sickle
