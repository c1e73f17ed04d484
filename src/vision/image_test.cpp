// Image decoding: errors for bad input (clear, naming the input; never a crash) and the RGB
// conversion of PNGs with alpha. The pixel agreement with Pillow's decoders is checked by
// tests/vision_reference_test.sh.
#include <gtest/gtest.h>
#include <png.h>
#include <zlib.h>

#include <cstring>
#include <string>

#include "base/error.h"
#include "vision/image.h"

namespace sickle::vision {
namespace {

std::string chunk(const char* type, const std::string& data) {
  std::string out(4, '\0');
  const uint32_t n = uint32_t(data.size());
  for (int i = 0; i < 4; ++i) out[size_t(i)] = char(n >> (24 - 8 * i));
  std::string td = std::string(type, 4) + data;
  out += td;
  const uint32_t crc = uint32_t(crc32(0, reinterpret_cast<const Bytef*>(td.data()), uInt(td.size())));
  for (int i = 0; i < 4; ++i) out += char(crc >> (24 - 8 * i));
  return out;
}

std::string png_header(uint32_t w, uint32_t h) {
  std::string ihdr;
  for (uint32_t v : {w, h})
    for (int i = 0; i < 4; ++i) ihdr += char(v >> (24 - 8 * i));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr);
}

void expect_error(const std::string& bytes, const std::string& fragment) {
  try {
    decode_image(bytes, "probe.img");
    ADD_FAILURE() << "accepted; expected '" << fragment << "'";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(fragment), std::string::npos) << what;
    EXPECT_NE(what.find("probe.img"), std::string::npos) << what;
  }
}

TEST(VisionImage, BadInputsGiveClearErrors) {
  expect_error("", "empty image");
  expect_error("GIF89a......", "not a PNG or JPEG");
  expect_error(std::string("\x89PNG\r\n\x1a\n", 8) + "xx", "bad PNG");
  // Refused from the header, before any pixel buffer (50000 x 50000 x 4 = 10 GB).
  expect_error(png_header(50000, 50000) + chunk("IDAT", "x"), "exceeds the limit");
  expect_error(png_header(40000, 8) + chunk("IDAT", "x"), "exceeds the limit");
  expect_error(png_header(16, 16), "bad PNG");  // no image data
  expect_error(std::string("\xFF\xD8\xFF\xE0", 4) + std::string(20, '\0'), "bad JPEG");
}

std::string write_png(uint32_t w, uint32_t h, png_uint_32 format, const std::vector<uint8_t>& pixels) {
  png_image im;
  std::memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  im.width = w;
  im.height = h;
  im.format = format;
  png_alloc_size_t size = 0;
  EXPECT_TRUE(png_image_write_to_memory(&im, nullptr, &size, 0, pixels.data(), 0, nullptr));
  std::string buf(size, '\0');
  EXPECT_TRUE(png_image_write_to_memory(&im, buf.data(), &size, 0, pixels.data(), 0, nullptr));
  return buf;
}

// RGBA PNGs are composited onto white as vLLM's rgba_to_rgb (x / 255 rounded): opaque pixels
// keep their colour, clear ones are white, (100, 50, 0) at alpha 128 is
// ((255 x 127 + c x 128) / 255 rounded) = (177, 152, 127). Gray+alpha keeps its gray whatever
// the alpha (vLLM converts mode LA with convert("RGB")). Pillow itself is the oracle of
// tests/vision_alpha_test.sh.
TEST(VisionImage, RgbaPngIsCompositedOnWhiteGrayAlphaDropsAlpha) {
  const std::vector<uint8_t> rgba = {10, 20, 30, 255, 10, 20, 30, 0, 100, 50, 0, 128, 255, 255, 255, 77};
  Image out = decode_image(write_png(2, 2, PNG_FORMAT_RGBA, rgba), "alpha.png");
  ASSERT_EQ(out.width, 2);
  ASSERT_EQ(out.height, 2);
  EXPECT_EQ(out.rgb, (std::vector<uint8_t>{10, 20, 30, 255, 255, 255, 177, 152, 127, 255, 255, 255}));

  const std::vector<uint8_t> ga = {10, 0, 200, 128, 90, 255};
  out = decode_image(write_png(3, 1, PNG_FORMAT_GA, ga), "gray_alpha.png");
  EXPECT_EQ(out.rgb, (std::vector<uint8_t>{10, 10, 10, 200, 200, 200, 90, 90, 90}));
}

}  // namespace
}  // namespace sickle::vision
