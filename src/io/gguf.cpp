// sickle/io/gguf.cpp — GGUF v3 writer and reader (see gguf.h for the layout and sources).
#include "io/gguf.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/ranges.h>

#include "base/error.h"
#include "base/numeric.h"
#include "io/output_path.h"

namespace sickle::gguf {

namespace fs = std::filesystem;

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr uint32_t kVersion = 3;
constexpr uint64_t kMaxString = 1ull << 30;
constexpr uint64_t kMaxArray = 1ull << 32;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void put_str(std::string& out, std::string_view s) {
  put<uint64_t>(out, s.size());
  out.append(s);
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

size_t scalar_size(ValueType t) {
  switch (t) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kBool: return 1;
    case ValueType::kU16:
    case ValueType::kI16: return 2;
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kF32: return 4;
    case ValueType::kU64:
    case ValueType::kI64:
    case ValueType::kF64: return 8;
    default: return 0;
  }
}

bool is_signed(ValueType t) {
  return t == ValueType::kI8 || t == ValueType::kI16 || t == ValueType::kI32 || t == ValueType::kI64;
}

Value scalar(ValueType t) {
  Value v;
  v.type = t;
  return v;
}

void write_fd(int fd, const std::string& label, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("{}: write failed: {}", label, std::strerror(errno));
    }
    c += w;
    n -= size_t(w);
  }
}

}  // namespace

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::kU8: return "u8";
    case ValueType::kI8: return "i8";
    case ValueType::kU16: return "u16";
    case ValueType::kI16: return "i16";
    case ValueType::kU32: return "u32";
    case ValueType::kI32: return "i32";
    case ValueType::kF32: return "f32";
    case ValueType::kBool: return "bool";
    case ValueType::kString: return "string";
    case ValueType::kArray: return "array";
    case ValueType::kU64: return "u64";
    case ValueType::kI64: return "i64";
    case ValueType::kF64: return "f64";
  }
  return "?";
}

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::kF32: return "F32";
    case GgmlType::kF16: return "F16";
    case GgmlType::kQ4_0: return "Q4_0";
    case GgmlType::kQ8_0: return "Q8_0";
    case GgmlType::kBF16: return "BF16";
  }
  return "?";
}

int64_t ggml_block_size(GgmlType t) { return (t == GgmlType::kQ4_0 || t == GgmlType::kQ8_0) ? 32 : 1; }

int64_t ggml_block_bytes(GgmlType t) {
  switch (t) {
    case GgmlType::kF32: return 4;
    case GgmlType::kF16:
    case GgmlType::kBF16: return 2;
    case GgmlType::kQ4_0: return 2 + 16;  // block_q4_0: ggml_half d; uint8_t qs[16]
    case GgmlType::kQ8_0: return 2 + 32;  // block_q8_0: ggml_half d; int8_t qs[32]
  }
  return 0;
}

uint64_t ggml_nbytes(GgmlType t, const std::vector<int64_t>& ne, std::string_view what) {
  if (ne.empty() || ne.size() > kMaxDims) fail("{}: {} dims (expected 1..4)", what, ne.size());
  // Element and byte counts must not wrap: [2^32, 2^32] wrapped to 0 bytes and passed every
  // bounds check of the reader.
  uint64_t n = 1;
  for (int64_t d : ne) {
    if (d <= 0) fail("{}: dimension {} is not positive", what, d);
    if (__builtin_mul_overflow(n, uint64_t(d), &n))
      fail("{}: dimensions {} overflow 64 bits", what, fmt::join(ne, " x "));
  }
  const int64_t bs = ggml_block_size(t);
  if (ne[0] % bs != 0)
    fail("{}: ne[0] = {} is not a multiple of {}'s block of {}", what, ne[0], ggml_type_name(t), bs);
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(n / uint64_t(bs), uint64_t(ggml_block_bytes(t)), &bytes))
    fail("{}: {} elements of {} overflow 64 bits of bytes", what, n, ggml_type_name(t));
  return bytes;
}

// ---- Value ---------------------------------------------------------------------------------

Value Value::u8(uint8_t v) {
  Value r = scalar(ValueType::kU8);
  r.u = v;
  return r;
}
Value Value::i8(int8_t v) {
  Value r = scalar(ValueType::kI8);
  r.i = v;
  return r;
}
Value Value::u16(uint16_t v) {
  Value r = scalar(ValueType::kU16);
  r.u = v;
  return r;
}
Value Value::i16(int16_t v) {
  Value r = scalar(ValueType::kI16);
  r.i = v;
  return r;
}
Value Value::u32(uint32_t v) {
  Value r = scalar(ValueType::kU32);
  r.u = v;
  return r;
}
Value Value::i32(int32_t v) {
  Value r = scalar(ValueType::kI32);
  r.i = v;
  return r;
}
Value Value::u64(uint64_t v) {
  Value r = scalar(ValueType::kU64);
  r.u = v;
  return r;
}
Value Value::i64(int64_t v) {
  Value r = scalar(ValueType::kI64);
  r.i = v;
  return r;
}
Value Value::f32(float v) {
  Value r = scalar(ValueType::kF32);
  r.f = v;
  return r;
}
Value Value::f64(double v) {
  Value r = scalar(ValueType::kF64);
  r.f = v;
  return r;
}
Value Value::boolean(bool v) {
  Value r = scalar(ValueType::kBool);
  r.u = v ? 1 : 0;
  return r;
}
Value Value::str(std::string v) {
  Value r = scalar(ValueType::kString);
  r.s = std::move(v);
  return r;
}
Value Value::arr(ValueType elem, std::vector<Value> items) {
  for (const auto& it : items)
    SICKLE_CHECK(it.type == elem, "array of {} holds a {}", value_type_name(elem), value_type_name(it.type));
  Value r = scalar(ValueType::kArray);
  r.array_type = elem;
  r.array = std::move(items);
  return r;
}
Value Value::str_array(const std::vector<std::string>& items) {
  std::vector<Value> v;
  v.reserve(items.size());
  for (const auto& s : items) v.push_back(str(s));
  return arr(ValueType::kString, std::move(v));
}
Value Value::i32_array(const std::vector<int32_t>& items) {
  std::vector<Value> v;
  v.reserve(items.size());
  for (int32_t x : items) v.push_back(i32(x));
  return arr(ValueType::kI32, std::move(v));
}

bool Value::operator==(const Value& o) const {
  if (type != o.type) return false;
  switch (type) {
    case ValueType::kString: return s == o.s;
    case ValueType::kArray: return array_type == o.array_type && array == o.array;
    case ValueType::kF32: return float(f) == float(o.f);
    case ValueType::kF64: return f == o.f;
    default: return is_signed(type) ? i == o.i : u == o.u;
  }
}

std::string Value::to_string(size_t max_items) const {
  switch (type) {
    case ValueType::kString: return fmt::format("\"{}{}\"", s.substr(0, 60), s.size() > 60 ? "..." : "");
    case ValueType::kBool: return u ? "true" : "false";
    case ValueType::kF32:
    case ValueType::kF64: return fmt::format("{}", f);
    case ValueType::kArray: {
      std::string r = fmt::format("[{} x {}:", array.size(), value_type_name(array_type));
      for (size_t k = 0; k < array.size() && k < max_items; ++k) {
        r += ' ';
        r += array[k].to_string(max_items);
      }
      if (array.size() > max_items) r += " ...";
      return r + "]";
    }
    default: return is_signed(type) ? std::to_string(i) : std::to_string(u);
  }
}

void encode_value(const Value& v, std::string& out) {
  switch (v.type) {
    case ValueType::kU8:
    case ValueType::kBool: put<uint8_t>(out, uint8_t(v.u)); break;
    case ValueType::kI8: put<int8_t>(out, int8_t(v.i)); break;
    case ValueType::kU16: put<uint16_t>(out, uint16_t(v.u)); break;
    case ValueType::kI16: put<int16_t>(out, int16_t(v.i)); break;
    case ValueType::kU32: put<uint32_t>(out, uint32_t(v.u)); break;
    case ValueType::kI32: put<int32_t>(out, int32_t(v.i)); break;
    case ValueType::kU64: put<uint64_t>(out, v.u); break;
    case ValueType::kI64: put<int64_t>(out, v.i); break;
    case ValueType::kF32: put<float>(out, float(v.f)); break;
    case ValueType::kF64: put<double>(out, v.f); break;
    case ValueType::kString: put_str(out, v.s); break;
    case ValueType::kArray:
      put<uint32_t>(out, uint32_t(v.array_type));
      put<uint64_t>(out, v.array.size());
      for (const auto& e : v.array) encode_value(e, out);
      break;
  }
}

// ---- Writer --------------------------------------------------------------------------------

Writer::Writer(fs::path out, bool force, uint32_t alignment)
    : out_(std::move(out)), alignment_(alignment), force_(force) {
  if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0)
    fail("gguf: alignment {} is not a power of two", alignment_);
  std::error_code ec;
  if (fs::exists(out_, ec) && !force) fail("{}: exists (use --force to replace it)", out_.string());
  if (fs::is_directory(out_, ec)) fail("{}: is a directory", out_.string());
  tmp_ = std::make_unique<TempOutput>(out_, OutputKind::kFile);
  if (alignment_ != 32) add_kv("general.alignment", Value::u32(alignment_));
}

Writer::~Writer() = default;  // an uncommitted temp file is removed by tmp_

void Writer::add_kv(const std::string& key, Value v) {
  if (key.empty()) fail("gguf: empty metadata key");
  if (kv_index_.count(key)) fail("gguf: duplicate metadata key '{}'", key);
  kv_index_[key] = kv_.size();
  kv_.emplace_back(key, std::move(v));
}

void Writer::add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne,
                        std::function<void(TensorSink&)> produce) {
  if (name.empty() || name.size() >= 64)
    fail("gguf: tensor name '{}' must have 1..63 bytes (GGML_MAX_NAME)", name);
  if (tensor_index_.count(name)) fail("gguf: duplicate tensor '{}'", name);
  const uint64_t nbytes = ggml_nbytes(type, ne, name);
  tensor_index_[name] = tensors_.size();
  tensors_.push_back({name, type, std::move(ne), nbytes, data_bytes_, std::move(produce)});
  data_bytes_ = align_up(data_bytes_ + nbytes, alignment_);
}

void Writer::commit() {
  SICKLE_CHECK(!committed_);
  std::string head;
  put<uint32_t>(head, kMagic);
  put<uint32_t>(head, kVersion);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, kv_.size());
  for (const auto& [k, v] : kv_) {
    put_str(head, k);
    put<uint32_t>(head, uint32_t(v.type));
    encode_value(v, head);
  }
  for (const auto& t : tensors_) {
    put_str(head, t.name);
    put<uint32_t>(head, uint32_t(t.ne.size()));
    for (int64_t d : t.ne) put<uint64_t>(head, uint64_t(d));
    put<uint32_t>(head, uint32_t(t.type));
    put<uint64_t>(head, t.offset);
  }
  head.resize(align_up(head.size(), alignment_), '\0');

  const std::string label = tmp_->path().string();
  const int fd = tmp_->fd();

  // A 4 MiB buffer between producers and the file: producers write rows or blocks.
  std::string buf;
  buf.reserve(4u << 20);
  auto flush = [&]() {
    write_fd(fd, label, buf.data(), buf.size());
    buf.clear();
  };
  auto append = [&](const void* p, size_t n) {
    if (buf.size() + n > buf.capacity()) flush();
    if (n >= buf.capacity()) {
      write_fd(fd, label, p, n);
    } else {
      buf.append(static_cast<const char*>(p), n);
    }
  };
  append(head.data(), head.size());
  uint64_t done = 0;
  for (auto& t : tensors_) {
    uint64_t written = 0;
    TensorSink sink{[&](const void* p, size_t n) {
      written += n;
      if (written > t.nbytes)
        fail("gguf: tensor '{}': producer wrote more than its {} bytes", t.name, t.nbytes);
      append(p, n);
    }};
    t.produce(sink);
    if (written != t.nbytes)
      fail("gguf: tensor '{}': producer wrote {} bytes, expected {}", t.name, written, t.nbytes);
    const uint64_t pad = align_up(t.nbytes, alignment_) - t.nbytes;
    static const char zeros[64] = {};
    for (uint64_t k = 0; k < pad; k += sizeof zeros)
      append(zeros, size_t(std::min<uint64_t>(sizeof zeros, pad - k)));
    done += t.nbytes;
    t.produce = nullptr;  // release captured state early
    if (on_bytes) on_bytes(done);
  }
  flush();
  if (::fsync(fd) != 0) fail("{}: fsync failed: {}", label, std::strerror(errno));
  tmp_->commit(force_);
  committed_ = true;
}

// ---- Reader --------------------------------------------------------------------------------

namespace {

struct Cursor {
  const std::byte* p;
  uint64_t size, pos = 0;
  const std::string& label;
  void need(uint64_t n, const char* what) const {
    if (n > size - pos)
      fail("{}: truncated while reading {} at byte {} (need {}, have {})", label, what, pos, n, size - pos);
  }
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string str(const char* what) {
    uint64_t n = get<uint64_t>(what);
    if (n > kMaxString) fail("{}: {} length {} is implausible", label, what, n);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(p + pos), size_t(n));
    pos += n;
    return s;
  }
};

Value read_value(Cursor& c, ValueType t, int depth) {
  Value v = scalar(t);
  switch (t) {
    case ValueType::kU8: v.u = c.get<uint8_t>("u8"); break;
    case ValueType::kBool: {
      uint8_t b = c.get<uint8_t>("bool");
      if (b > 1) fail("{}: bool value {} at byte {}", c.label, b, c.pos - 1);
      v.u = b;
      break;
    }
    case ValueType::kI8: v.i = c.get<int8_t>("i8"); break;
    case ValueType::kU16: v.u = c.get<uint16_t>("u16"); break;
    case ValueType::kI16: v.i = c.get<int16_t>("i16"); break;
    case ValueType::kU32: v.u = c.get<uint32_t>("u32"); break;
    case ValueType::kI32: v.i = c.get<int32_t>("i32"); break;
    case ValueType::kU64: v.u = c.get<uint64_t>("u64"); break;
    case ValueType::kI64: v.i = c.get<int64_t>("i64"); break;
    case ValueType::kF32: v.f = c.get<float>("f32"); break;
    case ValueType::kF64: v.f = c.get<double>("f64"); break;
    case ValueType::kString: v.s = c.str("string value"); break;
    case ValueType::kArray: {
      if (depth > 4) fail("{}: arrays nested too deep", c.label);
      uint32_t et = c.get<uint32_t>("array type");
      if (et > uint32_t(ValueType::kF64)) fail("{}: unknown array element type {}", c.label, et);
      uint64_t n = c.get<uint64_t>("array length");
      if (n > kMaxArray) fail("{}: array length {} is implausible", c.label, n);
      // The smallest encoding of one element: a scalar's size, a string's u64 length, an
      // array's u32 type + u64 length. A count the rest of the file cannot hold is an error
      // before the count sizes anything.
      const uint64_t min_elem = ValueType(et) == ValueType::kString  ? 8
                                : ValueType(et) == ValueType::kArray ? 12
                                                                     : scalar_size(ValueType(et));
      if (n > (c.size - c.pos) / min_elem)
        fail("{}: array of {} x {} at byte {} runs past the end of the file ({} bytes left)", c.label, n,
             value_type_name(ValueType(et)), c.pos, c.size - c.pos);
      v.array_type = ValueType(et);
      v.array.reserve(size_t(std::min<uint64_t>(n, 1u << 20)));
      for (uint64_t k = 0; k < n; ++k) v.array.push_back(read_value(c, ValueType(et), depth + 1));
      break;
    }
    default: fail("{}: unknown value type {}", c.label, uint32_t(t));
  }
  return v;
}

bool known_ggml_type(uint32_t t) { return t == 0 || t == 1 || t == 2 || t == 8 || t == 30; }

}  // namespace

Reader::Reader(const fs::path& path) : file_(std::make_unique<MappedFile>(path)), label_(path.string()) {
  bytes_ = {file_->data(), file_->size()};
  parse();
}

Reader::Reader(std::span<const std::byte> bytes, std::string label)
    : bytes_(bytes), label_(std::move(label)) {
  parse();
}

void Reader::parse() {
  Cursor c{bytes_.data(), bytes_.size(), 0, label_};
  uint32_t magic = c.get<uint32_t>("magic");
  if (magic != kMagic) fail("{}: not a GGUF file (magic {:#x}, expected {:#x})", label_, magic, kMagic);
  version_ = c.get<uint32_t>("version");
  if (version_ < 2 || version_ > 3) fail("{}: GGUF version {} (expected 2 or 3)", label_, version_);
  const uint64_t n_tensors = c.get<uint64_t>("tensor count");
  const uint64_t n_kv = c.get<uint64_t>("kv count");
  if (n_tensors > (1u << 24) || n_kv > (1u << 24))
    fail("{}: implausible counts ({} tensors, {} kv)", label_, n_tensors, n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.str("key");
    uint32_t t = c.get<uint32_t>("value type");
    if (t > uint32_t(ValueType::kF64)) fail("{}: key '{}': unknown value type {}", label_, key, t);
    if (find(key)) fail("{}: duplicate key '{}'", label_, key);
    kv_.emplace_back(std::move(key), read_value(c, ValueType(t), 0));
    kv_index_.emplace(kv_.back().first, kv_.size() - 1);
  }
  if (const Value* a = find("general.alignment")) {
    if (a->type != ValueType::kU32 || a->u == 0 || (a->u & (a->u - 1)) != 0)
      fail("{}: general.alignment must be a power-of-two u32, got {}", label_, a->to_string());
    alignment_ = uint32_t(a->u);
  }
  for (uint64_t k = 0; k < n_tensors; ++k) {
    TensorInfo ti;
    ti.name = c.str("tensor name");
    uint32_t nd = c.get<uint32_t>("n_dims");
    if (nd == 0 || nd > kMaxDims) fail("{}: tensor '{}': {} dims", label_, ti.name, nd);
    for (uint32_t d = 0; d < nd; ++d) {
      uint64_t x = c.get<uint64_t>("dim");
      if (x == 0 || x > (1ull << 40)) fail("{}: tensor '{}': dimension {} = {}", label_, ti.name, d, x);
      ti.ne.push_back(int64_t(x));
    }
    uint32_t t = c.get<uint32_t>("tensor type");
    if (!known_ggml_type(t))
      fail("{}: tensor '{}': ggml type {} is not one sickle reads", label_, ti.name, t);
    ti.type = GgmlType(t);
    ti.offset = c.get<uint64_t>("tensor offset");
    if (ti.offset % alignment_ != 0)
      fail("{}: tensor '{}': offset {} not aligned to {}", label_, ti.name, ti.offset, alignment_);
    ti.nbytes = ggml_nbytes(ti.type, ti.ne, label_ + ": tensor '" + ti.name + "'");
    if (find_tensor(ti.name)) fail("{}: duplicate tensor '{}'", label_, ti.name);
    tensors_.push_back(std::move(ti));
    tensor_index_.emplace(tensors_.back().name, tensors_.size() - 1);
  }
  data_offset_ = align_up(c.pos, alignment_);
  if (data_offset_ > c.size) fail("{}: data section starts past the end", label_);
  const uint64_t data_size = c.size - data_offset_;
  for (const auto& t : tensors_)
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail("{}: tensor '{}': bytes [{}, {}) run past the data section of {} bytes", label_, t.name, t.offset,
           t.offset + t.nbytes, data_size);
}

const Value* Reader::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const Value& Reader::get(std::string_view key) const {
  const Value* v = find(key);
  if (!v) fail("{}: no metadata key '{}'", label_, key);
  return *v;
}

const TensorInfo* Reader::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& Reader::tensor(std::string_view name) const {
  const TensorInfo* t = find_tensor(name);
  if (!t) fail("{}: no tensor '{}'", label_, name);
  return *t;
}

const std::byte* Reader::tensor_data(const TensorInfo& t) const {
  return bytes_.data() + data_offset_ + t.offset;
}

void dequantize_row(GgmlType type, const void* src, int64_t n, float* out) {
  const auto* b = static_cast<const uint8_t*>(src);
  switch (type) {
    case GgmlType::kF32: std::memcpy(out, b, size_t(n) * 4); return;
    case GgmlType::kF16:
      for (int64_t k = 0; k < n; ++k) {
        uint16_t h;
        std::memcpy(&h, b + 2 * k, 2);
        out[k] = f16_to_f32(h);
      }
      return;
    case GgmlType::kBF16:
      for (int64_t k = 0; k < n; ++k) {
        uint16_t h;
        std::memcpy(&h, b + 2 * k, 2);
        out[k] = bf16_to_f32(h);
      }
      return;
    case GgmlType::kQ4_0:  // ggml-quants.c dequantize_row_q4_0: y[j] = (lo - 8) d, y[j+16] = (hi - 8) d
      SICKLE_CHECK(n % 32 == 0);
      for (int64_t blk = 0; blk < n / 32; ++blk, b += 18) {
        uint16_t h;
        std::memcpy(&h, b, 2);
        const float d = f16_to_f32(h);
        for (int j = 0; j < 16; ++j) {
          out[blk * 32 + j] = float(int(b[2 + j] & 0x0f) - 8) * d;
          out[blk * 32 + j + 16] = float(int(b[2 + j] >> 4) - 8) * d;
        }
      }
      return;
    case GgmlType::kQ8_0:  // dequantize_row_q8_0: y[j] = qs[j] d
      SICKLE_CHECK(n % 32 == 0);
      for (int64_t blk = 0; blk < n / 32; ++blk, b += 34) {
        uint16_t h;
        std::memcpy(&h, b, 2);
        const float d = f16_to_f32(h);
        for (int j = 0; j < 32; ++j) out[blk * 32 + j] = float(int8_t(b[2 + j])) * d;
      }
      return;
  }
}

}  // namespace sickle::gguf
