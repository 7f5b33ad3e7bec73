#include "util/json_text.h"

#include <nlohmann/json.hpp>

#include "util/json_bytes.h"

namespace comfymq {

void AppendJsonString(std::string* out, std::string_view s) {
  const size_t start = out->size();
  out->reserve(start + s.size() + 2);
  *out += '"';
  static const char kHex[] = "0123456789abcdef";
  const auto* const begin = reinterpret_cast<const unsigned char*>(s.data());
  const auto* const end = begin + s.size();
  for (const unsigned char* p = begin; p < end;) {
    const unsigned char* run_end = SkipPlain(p, end);  // bytes that go out as they are
    out->append(reinterpret_cast<const char*>(p), static_cast<size_t>(run_end - p));
    p = run_end;
    if (p == end) break;
    const unsigned char c = *p;
    if (c >= 0x80) {
      const size_t n = Utf8Length(p, end);
      if (n == 0) {  // invalid UTF-8: nlohmann's own replacement rules, for the whole string
        out->resize(start);
        *out += nlohmann::json(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        return;
      }
      out->append(reinterpret_cast<const char*>(p), n);
      p += n;
      continue;
    }
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      default:  // the other control bytes (a plain byte never gets here)
        *out += "\\u00";
        *out += kHex[c >> 4];
        *out += kHex[c & 15];
    }
    ++p;
  }
  *out += '"';
}

}  // namespace comfymq
