// sickle/vision/data_url.h — the bytes of an image sent inline as an RFC 2397 data: URL,
// `data:image/<subtype>[;param=value]...;base64,<payload>`, as OpenAI image_url parts carry them
// (serve, and observe/eval chat-jsonl records). Only image media types and base64 payloads are
// read, as vLLM's MediaConnector reads them; whitespace in the payload (line breaks of wrapped
// base64) is skipped. The scheme, the media type and `base64` are case-insensitive. The bytes go
// to vision::decode_image, which tells PNG and JPEG apart by their signature.
#pragma once

#include <string>
#include <string_view>

namespace sickle::vision {

// True when `url` starts with `data:` (any case).
bool is_data_url(std::string_view url);

// The decoded payload of a data: URL. Throws Error "WHAT: <reason>" (`what` names the field
// at fault) for a URL without ',', a media type other than image/..., a payload not marked
// ;base64, a payload that is not base64, or an empty payload.
std::string decode_data_url(std::string_view url, const std::string& what);

}  // namespace sickle::vision
