// libFuzzer target for image decoding and preprocessing (`make fuzz`): any bytes must give either
// an RGB image within the limits, which then preprocesses into patches, or a sickle::Error;
// never a crash, hang, leak or out-of-bounds access.
#include <cstdint>
#include <string_view>

#include "base/error.h"
#include "vision/image.h"
#include "vision/preprocess.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    sickle::vision::Image im = sickle::vision::decode_image(bytes, "fuzz");
    if (im.width <= 0 || im.height <= 0 || im.width > sickle::vision::kMaxImageSide ||
        im.height > sickle::vision::kMaxImageSide || im.rgb.size() != size_t(im.width * im.height * 3))
      __builtin_trap();
    sickle::vision::MediaConfig m;
    m.in_patch_limit = 64;  // small: exercises the resize on most inputs, quickly
    m.patch_limit_on_one_side = 16;
    sickle::vision::Patches p = sickle::vision::preprocess(im, m);
    if (p.grid_h % m.merge || p.grid_w % m.merge || p.tokens != (p.grid_h / 2) * (p.grid_w / 2))
      __builtin_trap();
  } catch (const sickle::Error&) {
  }
  return 0;
}
