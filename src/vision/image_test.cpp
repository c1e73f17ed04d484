// Image decoding: errors for bad input (clear, naming the input; never a crash) and the RGB
// conversion of a PNG with alpha. The pixel agreement with Pillow's decoders is checked by
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

TEST(VisionImage, PngAlphaIsDroppedNotComposited) {
  png_image im;
  std::memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  im.width = 3;
  im.height = 2;
  im.format = PNG_FORMAT_RGBA;
  std::vector<uint8_t> rgba(3 * 2 * 4);
  for (size_t i = 0; i < rgba.size(); ++i) rgba[i] = uint8_t(i * 37 + 5);
  for (size_t i = 3; i < rgba.size(); i += 4) rgba[i] = uint8_t(i * 11);  // alpha, some 0
  png_alloc_size_t size = 0;
  ASSERT_TRUE(png_image_write_to_memory(&im, nullptr, &size, 0, rgba.data(), 0, nullptr));
  std::string buf(size, '\0');
  ASSERT_TRUE(png_image_write_to_memory(&im, buf.data(), &size, 0, rgba.data(), 0, nullptr));
  Image out = decode_image(buf, "alpha.png");
  ASSERT_EQ(out.width, 3);
  ASSERT_EQ(out.height, 2);
  for (size_t p = 0; p < 6; ++p)
    for (size_t c = 0; c < 3; ++c) EXPECT_EQ(out.rgb[p * 3 + c], rgba[p * 4 + c]) << p << " " << c;
}

}  // namespace
}  // namespace sickle::vision
