// sickle/vision/embed.h — image files to projected embeddings, and their safetensors dump
// (`sickle run --image F --dump-image-embeddings OUT`): F32 `image.<i>` [tokens, text hidden] per
// image in command-line order, I64 `grid_thw` [images, 3] (patch grid after the processor's
// resize and padding), so any implementation can be compared with sickle's.
#pragma once

#include <array>
#include <filesystem>
#include <string>
#include <vector>

namespace sickle {
class Checkpoint;
class ThreadPool;
}  // namespace sickle

namespace sickle::vision {

struct ImageEmbeddings {
  int64_t hidden = 0;
  std::vector<std::vector<float>> images;     // [tokens_i * hidden]
  std::vector<std::array<int64_t, 3>> grids;  // (t, h, w) patches
};

ImageEmbeddings embed_image_files(const Checkpoint& ck, const std::vector<std::string>& files,
                                  ThreadPool* pool);
void write_image_embeddings(const std::filesystem::path& out, const ImageEmbeddings& e);

}  // namespace sickle::vision
