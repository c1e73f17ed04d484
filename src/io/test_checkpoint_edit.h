// sickle/io/test_checkpoint_edit.h — for tests only: a copy of a checkpoint with some tensors'
// bytes replaced (broken weights, forced router biases), written through CheckpointWriter so the
// copy is a valid checkpoint in the same layout; non-tensor files are copied as they are.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/writer.h"

namespace sickle::test_util {

using TensorEdit = std::function<std::vector<std::byte>(const TensorView&)>;

inline void copy_with_edits(const std::filesystem::path& src, const std::filesystem::path& dst,
                            const std::map<std::string, TensorEdit>& edits) {
  auto ck = Checkpoint::open(src);
  CheckpointWriter w(dst);
  for (const auto& name : ck->tensor_names()) {
    const TensorInfo& info = ck->info(name);
    auto it = edits.find(name);
    if (it == edits.end()) {
      w.add(name, info.dtype, info.shape, TensorSource::from_file(ck->file_of(name), info));
    } else {
      w.add(name, info.dtype, info.shape, TensorSource::from_bytes(it->second(ck->tensor(name))));
    }
  }
  for (const auto& e : std::filesystem::directory_iterator(src))
    if (e.path().extension() != ".safetensors" && e.path().filename() != "model.safetensors.index.json")
      w.copy_file(e.path(), e.path().filename().string());
  w.commit();
}

}  // namespace sickle::test_util
