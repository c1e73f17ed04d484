#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "base/error.h"

namespace sickle {

using json = nlohmann::json;

namespace {
// A validated shape's product fits (it equals bytes / dtype size), except when a zero dimension
// follows huge ones ([2^62, 2^62, 0] is a legal empty tensor): check for zero first so the
// product never overflows.
int64_t shape_numel(const std::vector<int64_t>& shape) {
  for (auto d : shape)
    if (d == 0) return 0;
  uint64_t n = 1;
  for (auto d : shape) n *= uint64_t(d);
  return int64_t(n);
}
}  // namespace

int64_t TensorInfo::numel() const { return shape_numel(shape); }

int64_t TensorView::numel() const { return shape_numel(shape); }

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string TensorView::shape_str() const { return shape_to_string(shape); }

SafetensorsHeader parse_safetensors_header(std::string_view text, uint64_t data_size,
                                           const std::string& label) {
  SafetensorsHeader out;
  if (text.empty() || text.front() != '{')
    fail("{}: safetensors header does not start with '{{' (not a safetensors file?)", label);
  // Equal keys in one object: the JSON parser keeps the last, so a tensor named twice would
  // silently lose its first entry (its bytes read as the other's, or a hole). Refused, named.
  std::vector<std::set<std::string>> open_objects;
  std::string top_key;
  auto no_duplicate_keys = [&](int, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (ev == json::parse_event_t::object_end) {
      open_objects.pop_back();
    } else if (ev == json::parse_event_t::key) {
      const std::string& k = parsed.get_ref<const std::string&>();
      const bool top = open_objects.size() == 1;
      if (top) top_key = k;
      if (!open_objects.back().insert(k).second) {
        if (!top) fail("{}: '{}': key '{}' appears twice in the safetensors header", label, top_key, k);
        if (k == "__metadata__") fail("{}: '__metadata__' appears twice in the safetensors header", label);
        fail("{}: tensor '{}' appears twice in the safetensors header", label, k);
      }
    }
    return true;
  };
  json root;
  try {
    root = json::parse(text.begin(), text.end(), no_duplicate_keys);
  } catch (const json::exception& e) {
    fail("{}: safetensors header is not valid JSON: {}", label, e.what());
  }
  if (!root.is_object()) fail("{}: safetensors header is not a JSON object", label);
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail("{}: __metadata__ is not an object", label);
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail("{}: __metadata__[\"{}\"] is not a string", label, m.key());
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail("{}: tensor '{}': entry is not an object", label, name);
    TensorInfo t;
    t.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) fail("{}: tensor '{}': missing string field 'dtype'", label, name);
    auto parsed = parse_dtype(dt->get<std::string>());
    if (!parsed) fail("{}: tensor '{}': unknown dtype '{}'", label, name, dt->get<std::string>());
    t.dtype = *parsed;
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) fail("{}: tensor '{}': missing array field 'shape'", label, name);
    if (sh->size() > 16)
      fail("{}: tensor '{}': {} dimensions (at most 16 supported)", label, name, sh->size());
    // Saturating element count: anything past 2^64 cannot match a real byte length anyway.
    const unsigned __int128 kCap = (unsigned __int128)1 << 64;
    unsigned __int128 numel = 1;
    bool has_zero = false;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
        fail("{}: tensor '{}': shape entry {} is not a non-negative integer", label, name, d.dump());
      uint64_t dim = d.get<uint64_t>();
      if (dim > uint64_t(std::numeric_limits<int64_t>::max()))
        fail("{}: tensor '{}': dimension {} too large", label, name, dim);
      t.shape.push_back(int64_t(dim));
      if (dim == 0) has_zero = true;
      numel = std::min(numel * dim, kCap);
    }
    if (has_zero) numel = 0;
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2)
      fail("{}: tensor '{}': 'data_offsets' must be an array [begin, end]", label, name);
    for (const auto& o : *off)
      if (!o.is_number_unsigned() && !(o.is_number_integer() && o.get<int64_t>() >= 0))
        fail("{}: tensor '{}': data_offsets entry {} is not a non-negative integer", label, name, o.dump());
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    if (t.end < t.begin) fail("{}: tensor '{}': data_offsets end {} < begin {}", label, name, t.end, t.begin);
    unsigned __int128 expect = numel * dtype_size(t.dtype);
    if (expect != (unsigned __int128)(t.end - t.begin))
      fail("{}: tensor '{}': byte length {} != numel x {} size ({} x {} = {}) for shape {}", label, name,
           t.end - t.begin, dtype_name(t.dtype),
           numel >= kCap ? std::string("(huge)") : std::to_string(uint64_t(numel)), dtype_size(t.dtype),
           expect >= kCap ? std::string("(huge)") : std::to_string(uint64_t(expect)),
           shape_to_string(t.shape));
    if (t.end > data_size)
      fail("{}: tensor '{}': data [{}, {}) past the end of the data section ({} bytes; file truncated?)",
           label, name, t.begin, t.end, data_size);
    out.tensors.push_back(std::move(t));
  }
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const auto& t : out.tensors) {
    if (t.begin > cursor)
      fail("{}: hole in data section: bytes [{}, {}) before tensor '{}' belong to no tensor", label, cursor,
           t.begin, t.name);
    if (t.begin < cursor)
      fail("{}: tensor '{}': data [{}, {}) overlaps the previous tensor (which ends at {})", label, t.name,
           t.begin, t.end, cursor);
    cursor = t.end;
  }
  if (cursor != data_size)
    fail("{}: data section has {} bytes but tensors cover only {} (trailing bytes belong to no tensor)",
         label, data_size, cursor);
  return out;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  auto f = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  f->file_ = std::make_unique<MappedFile>(path);
  const std::string label = path.string();
  size_t size = f->file_->size();
  if (size < 8)
    fail("{}: file is {} bytes, too short for a safetensors header length (8 bytes)", label, size);
  uint64_t n = 0;
  std::memcpy(&n, f->file_->data(), 8);  // little-endian host assumed (x86-64, aarch64)
  if (n > kMaxSafetensorsHeader)
    fail("{}: header length {} exceeds the {} byte limit", label, n, kMaxSafetensorsHeader);
  if (n > size - 8)
    fail("{}: header length {} but only {} bytes follow (file truncated?)", label, n, size - 8);
  std::string_view text(reinterpret_cast<const char*>(f->file_->data()) + 8, n);
  // Writers pad with spaces; trailing spaces are fine JSON.
  f->data_offset_ = 8 + n;
  f->header_ = parse_safetensors_header(text, size - 8 - n, label);
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) f->index_.emplace(f->header_.tensors[i].name, i);
  return f;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

TensorView SafetensorsFile::view(const TensorInfo& info) const {
  TensorView v;
  v.data = file_->data() + data_offset_ + info.begin;
  v.dtype = info.dtype;
  v.shape = info.shape;
  v.name = info.name;
  return v;
}

TensorView SafetensorsFile::view(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (!t) fail("{}: no tensor named '{}'", path().string(), name);
  return view(*t);
}

}  // namespace sickle
