// Writing JSON text without building a document: for the hot paths (store events, job messages, history
// entries) where nlohmann's map-backed objects cost more than the work around them. The output is the same
// text nlohmann's dump(-1, ' ', false, error_handler_t::replace) gives for the same values in the same order
// (strings: \" \\ \b \f \n \r \t, other controls as \u00xx, UTF-8 as it is; invalid UTF-8 is replaced as
// nlohmann replaces it). Thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace comfymq {

// Appends `s` as a JSON string (with quotes).
void AppendJsonString(std::string* out, std::string_view s);

// {"key": value, ...} in the order the calls come; keys are written as JSON strings too.
class JsonObjectText {
 public:
  JsonObjectText() : text_("{") {}
  JsonObjectText& Str(std::string_view key, std::string_view value) {
    Key(key);
    AppendJsonString(&text_, value);
    return *this;
  }
  JsonObjectText& Int(std::string_view key, int64_t value) {
    Key(key);
    text_ += std::to_string(value);
    return *this;
  }
  JsonObjectText& UInt(std::string_view key, uint64_t value) {
    Key(key);
    text_ += std::to_string(value);
    return *this;
  }
  JsonObjectText& Bool(std::string_view key, bool value) {
    Key(key);
    text_ += value ? "true" : "false";
    return *this;
  }
  JsonObjectText& Null(std::string_view key) {
    Key(key);
    text_ += "null";
    return *this;
  }
  // `json` must be valid JSON text already in the form wanted (e.g. made by nlohmann's dump).
  JsonObjectText& Raw(std::string_view key, std::string_view json) {
    Key(key);
    text_.append(json.data(), json.size());
    return *this;
  }
  // The finished text; the object is spent.
  std::string Done() {
    text_ += '}';
    return std::move(text_);
  }

 private:
  void Key(std::string_view key) {
    if (text_.size() > 1) text_ += ',';
    AppendJsonString(&text_, key);
    text_ += ':';
  }
  std::string text_;
};

}  // namespace comfymq
