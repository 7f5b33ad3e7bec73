// libFuzzer target for everything a peer's bytes reach first: the CMQP frame decoder, and the capability and
// prompt parsers behind it (including the fast prompt check, held to the full one). Any crash, sanitizer report, or
// broken invariant (a message that decodes must encode and decode to the same frames) is a finding. `make fuzz` runs it
// briefly; longer by hand:
//   build-fuzz/protocol_fuzz -max_total_time=3600 tests/fuzz/corpus
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "comfymq/capabilities.h"
#include "net/protocol.h"
#include "util/json_checks.h"
#include "util/prompt_scan.h"

using namespace comfymq;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The input is a message: frames, each prefixed by a u16 length; the last takes whatever remains.
  std::vector<std::string> frames;
  size_t pos = 0;
  while (pos < size && frames.size() < 4) {
    if (size - pos < 2 || frames.size() == 3) {
      frames.emplace_back(reinterpret_cast<const char*>(data + pos), size - pos);
      break;
    }
    size_t n = data[pos] | (static_cast<size_t>(data[pos + 1]) << 8);
    pos += 2;
    n = std::min(n, size - pos);
    frames.emplace_back(reinterpret_cast<const char*>(data + pos), n);
    pos += n;
  }
  // The fast checks never accept what the full ones refuse (whole input, and each frame).
  const std::string_view whole(reinterpret_cast<const char*>(data), size);
  if (FastPromptAccepts(whole) && !CheckPromptJsonFully(whole).ok()) __builtin_trap();
  if (FastJsonAccepts(whole) && !ValidateJsonValue(whole, "input").ok()) __builtin_trap();
  for (const std::string& f : frames) {
    if (FastPromptAccepts(f) && !CheckPromptJsonFully(f).ok()) __builtin_trap();
    if (FastJsonAccepts(f) && !ValidateJsonValue(f, "frame").ok()) __builtin_trap();
  }

  std::vector<std::string_view> views(frames.begin(), frames.end());
  proto::Message m;
  if (!proto::Decode(views, &m).ok()) return 0;

  // What decodes re-encodes to frames that decode the same way.
  std::vector<std::string> again = proto::Encode(m);
  std::vector<std::string_view> again_views(again.begin(), again.end());
  proto::Message m2;
  if (!proto::Decode(again_views, &m2).ok()) __builtin_trap();
  if (proto::Encode(m2) != again) __builtin_trap();

  // The parsers the broker runs on what it decoded.
  if (!m.caps_json.empty()) {
    Capabilities caps;
    Capabilities::FromJson(m.caps_json, &caps);
  }
  if (!m.prompt_json.empty()) {
    Requirements req;
    if (ExtractRequirements(m.prompt_json, &req).ok()) {
      Capabilities none;
      Mismatches(none, req);
    }
  }
  return 0;
}
