// sickle/vision/image.h — PNG and JPEG bytes to 8-bit RGB (libpng's simplified API,
// libjpeg-turbo), as the model's processor sees them when vLLM serves it (vLLM's image loader,
// vllm/multimodal/media/image.py ImageMediaIO: Pillow opens the image, then RGBA images go through
// rgba_to_rgb and every other mode through Image.convert("RGB")):
//   - grayscale is replicated to three channels, palettes are expanded;
//   - RGBA PNGs (colour type 6) are alpha-composited onto white, kRgbaBackground (vLLM's
//     rgba_to_rgb default), with Pillow's arithmetic (x / 255 rounded);
//   - any other transparency is dropped, as Pillow's convert("RGB") drops it: gray+alpha (mode
//     LA), palettes with a tRNS chunk (mode P) and RGB / gray with a tRNS colour key keep their
//     colours whatever their alpha;
//   - 16-bit PNGs go through libpng's 8-bit sRGB conversion (gamma-aware: may differ from PIL's
//     truncation by a few levels);
//   - CMYK / YCCK JPEGs (four components) are converted exactly as Pillow 9.4 does: Adobe's
//     inverted samples assumed, then its CMYK -> RGB formula (no colour management, ICC
//     profiles are ignored as Pillow's convert ignores them).
// Limits, checked from the header before any pixel buffer is allocated: each side at most
// kMaxImageSide pixels and at most kMaxImagePixels pixels in all (a decompression bomb such as a
// 50000 x 50000 header is refused). Truncated data, a wrong signature or a zero size throw Error
// naming `what` (the file name or "image_url part i").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "vision/preprocess.h"

namespace sickle::vision {

inline constexpr int64_t kMaxImageSide = 32768;
inline constexpr int64_t kMaxImagePixels = 64ll << 20;  // 64 Mpixel (Pillow warns at 89 M)
// What an RGBA image's transparent pixels show (vLLM's ImageMediaIO default rgba_background_color).
inline constexpr int kRgbaBackground[3] = {255, 255, 255};

Image decode_image(std::string_view bytes, const std::string& what);
Image read_image_file(const std::string& path);

}  // namespace sickle::vision
