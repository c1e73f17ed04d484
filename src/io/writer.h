// sickle/io/writer.h — streaming safetensors checkpoint writer.
//
// Tensors are queued with a TensorSource (bytes in a mapping, an owned buffer, a list of row
// ranges, or a producer called only when the shard is written) and written shard by shard:
// a shard closes when the next tensor would pass `max_shard_bytes`. Each shard's header is
// padded with spaces to a multiple of 8. Everything goes into a temporary directory beside
// the output (io/output_path.h's TempOutput: `.<name>.tmp-XXXXXX`, locked while the writer
// lives; one left by a killed run is removed by the next writer of the same output); commit()
// writes the index last and renames the directory into place. A writer destroyed without
// commit() removes its temporary directory: no partial output survives.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/dtype.h"
#include "io/safetensors.h"

namespace sickle {

// A contiguous run of source bytes. When src_fd >= 0 the same bytes are at src_offset in
// that file, and the writer may use copy_file_range instead of reading through `ptr`.
struct ByteChunk {
  const std::byte* ptr = nullptr;
  size_t size = 0;
  int src_fd = -1;
  uint64_t src_offset = 0;
};

struct TensorSource {
  std::vector<ByteChunk> chunks;
  std::shared_ptr<const void> keepalive;            // owns buffer bytes, if any
  std::function<std::vector<std::byte>()> produce;  // lazy: called at write time instead of chunks
  // generated: called at write time for consecutive byte ranges [offset, offset + n) of the
  // tensor, n <= kGenerateChunk, offsets multiples of kGenerateChunk, so the writer holds at
  // most one chunk in memory however large the tensor (synth of real-size models).
  std::function<void(uint64_t offset, std::byte* dst, size_t n)> generate;
  size_t lazy_size = 0;
  static constexpr size_t kGenerateChunk = 16u << 20;  // a multiple of every element size

  size_t size() const;
  // The whole tensor as it lies in a mapped safetensors file (zero-copy; copy_file_range capable).
  static TensorSource from_file(const SafetensorsFile& file, const TensorInfo& info);
  // Selected outer-dimension rows (in the given order) of a tensor in a mapped file.
  static TensorSource rows_from_file(const SafetensorsFile& file, const TensorInfo& info,
                                     const std::vector<int64_t>& rows);
  static TensorSource from_bytes(std::vector<std::byte> bytes);
  template <typename T>
  static TensorSource from_vector(const std::vector<T>& v) {
    std::vector<std::byte> b(v.size() * sizeof(T));
    if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
    return from_bytes(std::move(b));
  }
  static TensorSource lazy(size_t size, std::function<std::vector<std::byte>()> produce);
  static TensorSource generated(size_t size, std::function<void(uint64_t, std::byte*, size_t)> generate);
};

struct WriterOptions {
  uint64_t max_shard_bytes = 5ull << 30;  // as HF's default shard size
  bool force = false;                     // replace an existing output directory
  bool always_index = false;              // write model.safetensors.index.json even for one shard
  std::map<std::string, std::string> metadata = {{"format", "pt"}};
};

struct WrittenTensor {
  std::string name;
  std::string file;   // shard file name
  uint64_t checksum;  // hash64 of the bytes as written (re-read from the output)
};

class TempOutput;

class CheckpointWriter {
 public:
  // Throws Error if `out_dir` exists and !options.force, or its parent cannot hold a temp dir.
  CheckpointWriter(std::filesystem::path out_dir, WriterOptions options = {});
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Queues a tensor; validates that the source size equals numel * dtype size.
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, TensorSource source);
  // Copies a non-tensor file (tokenizer, chat template...) under `rel_name`.
  void copy_file(const std::filesystem::path& src, const std::string& rel_name);
  void write_text(const std::string& rel_name, const std::string& content);

  // Flushes, writes the index, fsyncs (each shard is re-read and checksummed right after it is
  // written and fsynced, while still in the page cache),
  // and renames the temp dir into place. Returns one entry per tensor.
  std::vector<WrittenTensor> commit();

  const std::filesystem::path& temp_dir() const { return tmp_dir_; }
  uint64_t bytes_written() const { return bytes_written_; }
  // Called as bytes land (after each tensor, or each chunk of a generated one). For progress bars.
  std::function<void(uint64_t)> on_bytes;

 private:
  struct Pending {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    TensorSource source;
  };
  void flush_shard();
  void write_all(int fd, const std::string& file, const void* p, size_t n);
  void write_chunk(int fd, const std::string& file, const ByteChunk& c);

  std::filesystem::path out_dir_, tmp_dir_;
  std::unique_ptr<TempOutput> tmp_;
  WriterOptions opt_;
  std::vector<Pending> pending_;
  uint64_t pending_bytes_ = 0;
  std::vector<std::string> shard_tmp_names_;
  std::vector<WrittenTensor> landed_;           // checksums re-read after each shard's flush
  std::map<std::string, size_t> tensor_shard_;  // tensor -> shard index
  std::vector<std::string> order_;
  uint64_t total_tensor_bytes_ = 0, bytes_written_ = 0;
  int64_t fault_enospc_after_ = -1;  // SICKLE_FAULT_ENOSPC_AFTER: simulate a full disk (tests)
  bool committed_ = false;
};

// One safetensors file `file` (not a directory) holding the tensors `add` queues: written through
// a CheckpointWriter into a temp beside `file` (removed after, or by the next run if this one is
// killed), then renamed into place, so a failed write leaves nothing behind.
void write_safetensors_file(const std::filesystem::path& file,
                            const std::function<void(CheckpointWriter&)>& add);

}  // namespace sickle
