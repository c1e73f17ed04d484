#include "vision/image.h"

#include <cstdio>  // jpeglib.h needs FILE

#include <jerror.h>
#include <jpeglib.h>  // before jerror.h, which needs its types
#include <png.h>

#include <csetjmp>
#include <cstring>

#include "base/error.h"
#include "base/file.h"

namespace sickle::vision {

namespace {

void check_size(int64_t w, int64_t h, const std::string& what, const char* kind) {
  if (w <= 0 || h <= 0) fail("{}: {} image has zero size ({}x{})", what, kind, w, h);
  if (w > kMaxImageSide || h > kMaxImageSide || w * h > kMaxImagePixels)
    fail("{}: {} image of {}x{} pixels exceeds the limit ({} a side, {} pixels in all)", what, kind, w, h,
         kMaxImageSide, kMaxImagePixels);
}

// An RGBA pixel onto kRgbaBackground as vLLM's rgba_to_rgb does it (Pillow 9.4's paste of the
// image onto a background-filled RGB image with the alpha plane as mask, Paste.c paste_mask_L):
// channel = DIV255(background x (255 - a) + c x a), DIV255(x) = ((t >> 8) + t) >> 8 with
// t = x + 128 (x / 255 rounded, halves up).
void composite_on_background(const uint8_t* rgba, uint8_t* rgb) {
  const int a = rgba[3];
  for (int c = 0; c < 3; ++c) {
    const int t = kRgbaBackground[c] * (255 - a) + rgba[c] * a + 128;
    rgb[c] = uint8_t(((t >> 8) + t) >> 8);
  }
}

Image decode_png(std::string_view bytes, const std::string& what) {
  png_image im;
  std::memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&im, bytes.data(), bytes.size()))
    fail("{}: bad PNG: {}", what, im.message);
  struct Guard {
    png_image* p;
    ~Guard() { png_image_free(p); }
  } guard{&im};
  check_size(im.width, im.height, what, "PNG");
  im.format = PNG_FORMAT_RGBA;
  std::vector<uint8_t> rgba(PNG_IMAGE_SIZE(im));
  if (!png_image_finish_read(&im, nullptr, rgba.data(), 0, nullptr))
    fail("{}: bad PNG: {}", what, im.message);
  Image out{int64_t(im.width), int64_t(im.height), std::vector<uint8_t>(size_t(im.width) * im.height * 3)};
  // IHDR is the first chunk (libpng checked it): its colour type is byte 25 of the file.
  const bool rgba_file = static_cast<unsigned char>(bytes[25]) == PNG_COLOR_TYPE_RGB_ALPHA;
  for (size_t i = 0, n = size_t(im.width) * im.height; i < n; ++i) {
    if (rgba_file)
      composite_on_background(&rgba[i * 4], &out.rgb[i * 3]);
    else
      std::memcpy(&out.rgb[i * 3], &rgba[i * 4], 3);
  }
  return out;
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegError*>(c->err);
  (*c->err->format_message)(c, e->message);
  std::longjmp(e->jump, 1);
}
// Warnings are ignored, except a premature end of data: libjpeg would fill the rest of the image
// with gray, Pillow refuses such a file ("image file is truncated"), and so does sickle.
void jpeg_warning(j_common_ptr c, int level) {
  if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(c);
}

// A row of a four-component JPEG as libjpeg outputs it (JCS_CMYK) to RGB, as Pillow 9.4 does:
// its JPEG plugin reads every four-component JPEG as rawmode "CMYK;I" (Adobe's inverted
// polarity assumed, whatever the markers say: each sample v means ink 255 - v), and
// Image.convert("RGB") then computes, with K' = 255 - K, channel = K' - round(ink x K' / 255)
// (ImagingConvert cmyk2rgb: a x b / 255 as ((t >> 8) + t) >> 8 with t = a x b + 128).
void cmyk_to_rgb(const uint8_t* in, uint8_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i, in += 4, out += 3) {
    const int white = in[3];  // 255 - ink of K
    for (int c = 0; c < 3; ++c) {
      const int t = (255 - in[c]) * white + 128;
      out[c] = uint8_t(white - (((t >> 8) + t) >> 8));
    }
  }
}

// Everything between setjmp and the end lives in C structs or is allocated before setjmp, so the
// longjmp skips no C++ destructor.
Image decode_jpeg(std::string_view bytes, const std::string& what) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  Image out;
  std::vector<uint8_t> cmyk_row;  // one output row of a four-component image
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.emit_message = jpeg_warning;
  err.message[0] = 0;
  jpeg_create_decompress(&cinfo);
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    fail("{}: bad JPEG: {}", what, err.message);
  }
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  const int64_t w = cinfo.image_width, h = cinfo.image_height;
  if (w <= 0 || h <= 0 || w > kMaxImageSide || h > kMaxImageSide || w * h > kMaxImagePixels) {
    jpeg_destroy_decompress(&cinfo);
    check_size(w, h, what, "JPEG");
  }
  // Four components (CMYK, or YCCK which libjpeg turns into CMYK): Pillow's rawmode "CMYK;I".
  const bool cmyk = cinfo.num_components == 4;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  out.width = w;
  out.height = h;
  out.rgb.resize(size_t(w * h * 3));
  cmyk_row.resize(cmyk ? size_t(w) * 4 : 0);
  jpeg_start_decompress(&cinfo);
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* dst = &out.rgb[size_t(cinfo.output_scanline) * size_t(w) * 3];
    JSAMPROW row = cmyk ? cmyk_row.data() : dst;
    jpeg_read_scanlines(&cinfo, &row, 1);
    if (cmyk) cmyk_to_rgb(cmyk_row.data(), dst, w);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return out;
}

}  // namespace

Image decode_image(std::string_view bytes, const std::string& what) {
  if (bytes.empty()) fail("{}: empty image (0 bytes)", what);
  static const unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), kPng, 8) == 0) return decode_png(bytes, what);
  if (bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xFF &&
      static_cast<unsigned char>(bytes[1]) == 0xD8 && static_cast<unsigned char>(bytes[2]) == 0xFF)
    return decode_jpeg(bytes, what);
  fail("{}: not a PNG or JPEG image (unrecognised signature)", what);
}

Image read_image_file(const std::string& path) { return decode_image(read_file(path), path); }

}  // namespace sickle::vision
