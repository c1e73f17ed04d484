// The data: URL decoder shared by serve (image_url parts) and observe/eval (chat-jsonl image
// parts): what it accepts, and an error naming the caller's field for every malformed URL.
#include "vision/data_url.h"

#include <gtest/gtest.h>

#include <string>

#include "base/error.h"

namespace sickle::vision {
namespace {

std::string error_of(const std::string& url) {
  try {
    decode_data_url(url, "FIELD");
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(DataUrl, DecodesBase64ImagePayloads) {
  EXPECT_EQ(decode_data_url("data:image/png;base64,aGVsbG8=", "f"), "hello");
  EXPECT_EQ(decode_data_url("DATA:Image/JPEG;BASE64,aGVsbG8", "f"), "hello");  // unpadded
  EXPECT_EQ(decode_data_url("data:image/png;name=a.png;base64,aGVs\r\n bG8=\n", "f"), "hello");
  EXPECT_EQ(decode_data_url("data:image/webp;base64,AAEC", "f"), std::string("\0\1\2", 3));
  EXPECT_TRUE(is_data_url("Data:image/png;base64,AA"));
  EXPECT_FALSE(is_data_url("file:///x.png"));
  EXPECT_FALSE(is_data_url("dat"));
}

TEST(DataUrl, MalformedUrlsNameTheField) {
  const std::string expected = "FIELD: expected a data:image/png;base64,... or data:image/jpeg;base64,... URL";
  struct Case {
    const char* url;
    std::string message;
  } cases[] = {
      {"data:image/png;base64", expected + " (no ',' before the data)"},
      {"data:image/png,aGVsbG8=", expected + " (only base64 data: URLs are read)"},
      {"data:image/png;base64x,aGVsbG8=", expected + " (only base64 data: URLs are read)"},
      {"data:image/png;charset=base64,aGVsbG8=", expected + " (only base64 data: URLs are read)"},
      {"data:text/plain;base64,aGVsbG8=", expected + ", not one of type 'text/plain'"},
      {"data:;base64,aGVsbG8=", expected + ", not one of type 'text/plain (the default)'"},
      {"data:imagex/png;base64,aGVsbG8=", expected + ", not one of type 'imagex/png'"},
      {"data:image/png;base64,aGV*bG8=", "FIELD: the data: URL's payload is not valid base64"},
      {"data:image/png;base64,aGVsb", "FIELD: the data: URL's payload is not valid base64"},  // 4k+1
      {"data:image/png;base64,aG=Vs", "FIELD: the data: URL's payload is not valid base64"},
      {"data:image/png;base64,", "FIELD: the data: URL has no data after ','"},
      {"data:image/png;base64, \n", "FIELD: the data: URL has no data after ','"},
      {"data:image/png;base64,==", "FIELD: the data: URL has no data after ','"},
      {"https://example.com/a.png", expected + ", not one starting 'https://example.'"},
  };
  for (const Case& c : cases) EXPECT_EQ(error_of(c.url), c.message) << c.url;
}

}  // namespace
}  // namespace sickle::vision
