#include "util/json_checks.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "comfymq/job.h"
#include "util/json_bytes.h"
#include "util/prompt_scan.h"

namespace comfymq {

std::string ValidUtf8(const std::string& text) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = len != 0 && i + len <= n && !(len == 2 && c < 0xC2);
    for (size_t k = 1; ok && k < len; ++k) ok = (p[i + k] & 0xC0) == 0x80;
    if (ok && len == 3) {
      const unsigned cp = ((c & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu);
      ok = cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF);
    }
    if (ok && len == 4) {
      const unsigned cp =
          ((c & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6) | (p[i + 3] & 0x3Fu);
      ok = cp >= 0x10000 && cp <= 0x10FFFF;
    }
    if (ok) {
      out.append(text, i, len);
      i += len;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
      ++i;
    }
  }
  return out;
}

namespace {

using json = nlohmann::json;

std::string CleanParseError(const std::string& what) {
  // nlohmann messages start with "[json.exception.parse_error.101] "; keep the readable part. It quotes what it
  // last read, which may end inside a UTF-8 sequence: made valid, or no caller could show it (Python refuses it).
  size_t p = what.find("] ");
  return ValidUtf8(p == std::string::npos ? what : what.substr(p + 2));
}

// nlohmann's lexer takes a NUL byte outside a string for the end of the input and ignores what follows, where
// every other parser (Python's json, the browser's) refuses the text: such text is refused here, so what the store
// accepts is what every reader of it reads. (Inside a string a raw NUL is an unescaped control character, which
// nlohmann refuses itself.)
Status NulByte(std::string_view text, const char* what) {
  const size_t at = text.find('\0');
  if (at == std::string_view::npos) return Status::OK();
  return Status::InvalidArgument(std::string(what) + " is not valid JSON: a NUL byte at offset " + std::to_string(at) +
                                 " (JSON text holds none)");
}

// Text for a message: control codes (see HasControlCode) shown as \uXXXX, cut at 64 bytes (ids come from callers).
std::string Shown(const std::string& text) {
  std::string out;
  const std::string cut = text.substr(0, 64);
  const auto* p = reinterpret_cast<const unsigned char*>(cut.data());
  for (size_t i = 0, len = 1; i < cut.size(); i += len) {
    const int code = ControlCodeAt(p, cut.size(), i, &len);
    if (code < 0) {
      out.push_back(static_cast<char>(p[i]));
      continue;
    }
    char buf[8];
    std::snprintf(buf, sizeof(buf), "\\u%04x", code);
    out += buf;
  }
  return text.size() > 64 ? out + "..." : out;
}

bool HasControlCharacter(const std::string& text) {
  return HasControlCode(reinterpret_cast<const unsigned char*>(text.data()), text.size());
}

std::string TooDeep(const char* what) {
  return std::string(what) + " nests deeper than " + std::to_string(kMaxJsonDepth) +
         " levels of objects and arrays (the limit)";
}

const char* KindName(json::value_t t) {
  switch (t) {
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::null: return "null";
    default: return "a number";
  }
}

// SAX handler that checks the API-format graph shape while parsing, without building a document.
class PromptShapeChecker {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  std::string error;
  size_t nodes = 0;

  bool null() { return Scalar(json::value_t::null); }
  bool boolean(bool) { return Scalar(json::value_t::boolean); }
  bool number_integer(number_integer_t) { return Scalar(json::value_t::number_integer); }
  bool number_unsigned(number_unsigned_t) { return Scalar(json::value_t::number_unsigned); }
  bool number_float(number_float_t, const string_t&) { return Scalar(json::value_t::number_float); }
  bool binary(binary_t&) { return Scalar(json::value_t::binary); }
  bool string(string_t& s) {
    if (depth_ == 2 && key_ == Key::kClassType) {
      if (s.empty()) return Fail("node '" + node_ + "': class_type must not be empty");
      if (HasControlCharacter(s)) {
        return Fail("node '" + node_ + "': class_type '" + Shown(s) + "' contains a control character");
      }
      has_class_type_ = true;
      key_ = Key::kOther;
      return true;
    }
    return Scalar(json::value_t::string);
  }

  bool start_object(std::size_t) { return Open(json::value_t::object); }
  bool start_array(std::size_t) { return Open(json::value_t::array); }
  bool end_object() { return Close(); }
  bool end_array() { return Close(); }

  bool key(string_t& k) {
    if (depth_ == 1) {
      node_ = Shown(k);
      if (k.empty()) return Fail("prompt has a node with an empty id");
      if (HasControlCharacter(k)) return Fail("node id '" + node_ + "' contains a control character");
    } else if (depth_ == 2) {
      key_ = k == "class_type" ? Key::kClassType : k == "inputs" ? Key::kInputs : Key::kOther;
    }
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    error = "prompt is not valid JSON: " + CleanParseError(ex.what());
    return false;
  }

 private:
  enum class Key { kOther, kClassType, kInputs };

  bool Fail(std::string msg) {
    if (error.empty()) error = std::move(msg);
    return false;
  }

  // A non-container value appears at the current depth.
  bool Scalar(json::value_t t) {
    if (depth_ == 0) return Fail(std::string("prompt must be a JSON object of node id -> node, got ") + KindName(t));
    if (depth_ == 1)
      return Fail("node '" + node_ + "' must be an object with class_type and inputs, got " + KindName(t));
    if (depth_ == 2) {
      if (key_ == Key::kClassType) return Fail("node '" + node_ + "': class_type must be a string, got " + KindName(t));
      if (key_ == Key::kInputs) return Fail("node '" + node_ + "': inputs must be an object, got " + KindName(t));
    }
    return true;
  }

  bool Open(json::value_t t) {
    if (depth_ >= kMaxJsonDepth) return Fail(TooDeep("prompt"));
    if (t == json::value_t::array) {
      if (depth_ <= 1 || (depth_ == 2 && key_ != Key::kOther)) {
        if (!Scalar(t)) return false;
      }
    } else if (depth_ == 1) {
      has_class_type_ = false;
      has_inputs_ = false;
    } else if (depth_ == 2) {
      if (key_ == Key::kClassType) return Scalar(t);
      if (key_ == Key::kInputs) has_inputs_ = true;
    }
    depth_++;
    return true;
  }

  bool Close() {
    depth_--;
    if (depth_ == 1) {
      if (!has_class_type_) return Fail("node '" + node_ + "' has no class_type");
      if (!has_inputs_) return Fail("node '" + node_ + "' has no inputs object");
      nodes++;
    } else if (depth_ == 2) {
      key_ = Key::kOther;
    } else if (depth_ == 0 && nodes == 0) {
      return Fail("prompt has no nodes");
    }
    return true;
  }

  int depth_ = 0;
  std::string node_;
  Key key_ = Key::kOther;
  bool has_class_type_ = false;
  bool has_inputs_ = false;
};

}  // namespace

Status ValidatePromptJson(std::string_view prompt) {
  if (FastPromptAccepts(prompt)) return Status::OK();  // the common case, at memory speed
  return CheckPromptJsonFully(prompt);
}

Status CheckPromptJsonFully(std::string_view prompt) {
  if (prompt.empty()) return Status::InvalidArgument("prompt is empty");
  CMQ_RETURN_IF_ERROR(NulByte(prompt, "prompt"));
  PromptShapeChecker checker;
  bool ok = json::sax_parse(prompt.begin(), prompt.end(), &checker, json::input_format_t::json, true);
  if (!ok || !checker.error.empty()) {
    return Status::InvalidArgument(checker.error.empty() ? "prompt is not valid JSON" : checker.error);
  }
  return Status::OK();
}

bool JsonSyntaxAccepts(std::string_view text) {
  return FastJsonAccepts(text) || (NulByte(text, "").ok() && json::accept(text.begin(), text.end()));
}

// Counts nesting in text that is valid JSON: brackets outside strings.
bool JsonDepthWithin(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > limit) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

// Valid text is checked without building a document (the fast scanner, which also keeps to the depth limit, or
// json::accept and a count of brackets); only bad text is parsed again, for the parser's message.
Status ValidateJsonValue(std::string_view text, const char* what) {
  if (FastJsonAccepts(text)) return Status::OK();
  CMQ_RETURN_IF_ERROR(NulByte(text, what));
  if (json::accept(text.begin(), text.end())) {
    return JsonDepthWithin(text, kMaxJsonDepth) ? Status::OK() : Status::InvalidArgument(TooDeep(what));
  }
  try {
    json v = json::parse(text.begin(), text.end());
    (void)v;
  } catch (const json::exception& e) {
    return Status::InvalidArgument(std::string(what) + " is not valid JSON: " + CleanParseError(e.what()));
  }
  return Status::InvalidArgument(std::string(what) + " is not valid JSON");
}

Status ValidateJsonObject(std::string_view text, const char* what) {
  CMQ_RETURN_IF_ERROR(ValidateJsonValue(text, what));  // valid, and within the depth limit: one pass in the usual case
  const size_t first = text.find_first_not_of(" \t\r\n");
  const char c = first == std::string_view::npos ? '\0' : text[first];
  if (c == '{') return Status::OK();
  const char* kind = c == '['                 ? "an array"
                     : c == '"'               ? "a string"
                     : (c == 't' || c == 'f') ? "a boolean"
                     : c == 'n'               ? "null"
                                              : "a number";
  return Status::InvalidArgument(std::string(what) + " must be a JSON object, got " + kind);
}

Status ApplyMetadataJson(std::string_view metadata_json, NewJob* job) {
  json v;
  try {
    v = json::parse(metadata_json.begin(), metadata_json.end());
  } catch (const json::exception& e) {
    return Status::InvalidArgument("metadata is not valid JSON: " + CleanParseError(e.what()));
  }
  if (v.is_null()) return Status::OK();
  if (!v.is_object())
    return Status::InvalidArgument(std::string("metadata must be an object, got ") + KindName(v.type()));
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string& k = it.key();
    const json& val = it.value();
    if (k == "prompt_id") {
      if (val.is_null()) continue;
      if (!val.is_string())
        return Status::InvalidArgument(std::string("metadata.prompt_id must be a string, got ") + KindName(val.type()));
      job->prompt_id = val.get<std::string>();
    } else if (k == "create_time") {
      if (val.is_null()) continue;
      if (!val.is_number() || !(val.get<double>() >= 0)) {
        return Status::InvalidArgument(
            "metadata.create_time must be a non-negative number (milliseconds since the epoch)");
      }
      if (val.get<double>() > 1e15) {
        return Status::InvalidArgument("metadata.create_time is out of range (milliseconds since the epoch expected)");
      }
      job->create_time_ms = static_cast<int64_t>(val.get<double>());
    } else {
      return Status::InvalidArgument("metadata key '" + k + "' is not allowed (allowed: prompt_id, create_time)");
    }
  }
  return Status::OK();
}

}  // namespace comfymq
