#include "vision/embed.h"

#include <fmt/format.h>

#include "io/checkpoint.h"
#include "io/writer.h"
#include "vision/image.h"
#include "vision/tower.h"

namespace sickle::vision {

ImageEmbeddings embed_image_files(const Checkpoint& ck, const std::vector<std::string>& files,
                                  ThreadPool* pool) {
  VisionTower tower(ck);
  ImageEmbeddings e;
  e.hidden = tower.config().text_hidden;
  for (const auto& f : files) {
    Patches p = preprocess(read_image_file(f), tower.media());
    e.images.push_back(tower.encode(p, pool));
    e.grids.push_back({p.grid_t, p.grid_h, p.grid_w});
  }
  return e;
}

void write_image_embeddings(const std::filesystem::path& out, const ImageEmbeddings& e) {
  write_safetensors_file(out, [&](CheckpointWriter& w) {
    std::vector<int64_t> grid;
    for (size_t i = 0; i < e.images.size(); ++i) {
      w.add(fmt::format("image.{}", i), DType::F32, {int64_t(e.images[i].size()) / e.hidden, e.hidden},
            TensorSource::from_vector(e.images[i]));
      grid.insert(grid.end(), e.grids[i].begin(), e.grids[i].end());
    }
    w.add("grid_thw", DType::I64, {int64_t(e.images.size()), 3}, TensorSource::from_vector(grid));
  });
}

}  // namespace sickle::vision
