#include "util/prompt_scan.h"

#include <cstdint>
#include <cstring>

#include "comfymq/job.h"
#include "util/json_bytes.h"

namespace comfymq {
namespace {

class Scanner {
 public:
  Scanner(std::string_view s) : p_(reinterpret_cast<const unsigned char*>(s.data())), end_(p_ + s.size()) {}

  // Any JSON value, alone (whitespace around it allowed).
  bool RunValue() {
    Ws();
    const bool ok = Value(0);
    Ws();
    return ok && p_ == end_;
  }

  bool Run() {
    Ws();
    size_t nodes = 0;  // the top level must be an object of nodes
    const bool ok = Object([&](std::string_view id) {
      nodes++;
      return !id.empty() && !NeedsCloserLook(id) && Node();
    });
    Ws();
    return ok && p_ == end_ && nodes > 0;
  }

 private:
  // {"class_type": non-empty string, "inputs": object, ...anything else}
  bool Node() {
    bool has_class_type = false, has_inputs = false;
    const bool ok = Object([&](std::string_view key) {
      if (key == "class_type") {
        std::string_view v;
        has_class_type = true;
        return Peek('"') && String(&v) && !v.empty() && !NeedsCloserLook(v);
      }
      if (key == "inputs") {
        has_inputs = true;
        return Peek('{') && Value(2);
      }
      return Value(2);  // inside the graph (1) and the node (2)
    });
    return ok && has_class_type && has_inputs;
  }

  // A node id or class_type as written: escapes (which may spell a control character) and control codes go to
  // the full checker, which refuses control codes there with a message naming the node.
  static bool NeedsCloserLook(std::string_view raw) {
    return raw.find('\\') != std::string_view::npos ||
           HasControlCode(reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
  }

  // A non-empty object; member(key) reads each value. False on a syntax error or when member says so.
  template <typename Member>
  bool Object(Member&& member) {
    if (!Expect('{')) return false;
    Ws();
    if (Peek('}')) return false;  // empty: no nodes, or a node without class_type
    for (;;) {
      std::string_view key;
      if (!Key(&key) || !member(key)) return false;
      Ws();
      if (!Peek(',')) return Expect('}');
      ++p_;
      Ws();
    }
  }

  // Any JSON value inside `outer` open containers, nesting kept on an explicit stack (no recursion). Deeper
  // than kMaxJsonDepth in all: false (the full checker refuses it, naming the limit).
  bool Value(size_t outer) {
    unsigned char stack[kMaxJsonDepth];
    const size_t max_depth = outer < kMaxJsonDepth ? kMaxJsonDepth - outer : 0;
    size_t depth = 0;
    for (;;) {
      // A value starts here.
      if (p_ >= end_) return false;
      const unsigned char c = *p_;
      if (c == '{' || c == '[') {
        if (depth == max_depth) return false;
        stack[depth++] = c;
        ++p_;
        Ws();
        if (Peek(c == '{' ? '}' : ']')) {
          ++p_;
          depth--;
        } else {
          if (c == '{' && !Key()) return false;
          continue;
        }
      } else if (c == '"') {
        if (!String(nullptr)) return false;
      } else if (c == '-' || (c >= '0' && c <= '9')) {
        if (!Number()) return false;
      } else if (!Literal()) {
        return false;
      }
      // After a value: close containers or move to the next member.
      for (;;) {
        if (depth == 0) return true;
        Ws();
        if (p_ >= end_) return false;
        const unsigned char open = stack[depth - 1];
        if (*p_ == ',') {
          ++p_;
          Ws();
          if (open == '{' && !Key()) return false;
          break;
        }
        if (*p_ != (open == '{' ? '}' : ']')) return false;
        ++p_;
        depth--;
      }
    }
  }

  // "key" : (leaves p_ at the value)
  bool Key(std::string_view* key = nullptr) {
    if (!String(key)) return false;
    Ws();
    if (!Expect(':')) return false;
    Ws();
    return true;
  }

  bool String(std::string_view* out) {
    if (!Expect('"')) return false;
    const unsigned char* start = p_;
    for (;;) {
      p_ = SkipPlain(p_, end_);
      if (p_ >= end_) return false;
      const unsigned char c = *p_;
      if (c == '"') break;
      if (c == '\\') {
        if (p_ + 1 >= end_) return false;
        switch (p_[1]) {
          case '"':
          case '\\':
          case '/':
          case 'b':
          case 'f':
          case 'n':
          case 'r':
          case 't': p_ += 2; continue;
          default: return false;  // \u escapes (surrogate pairs) and bad escapes: the full checker decides
        }
      }
      if (c < 0x20) return false;
      const size_t n = Utf8Length(p_, end_);
      if (n == 0) return false;
      p_ += n;
    }
    if (out != nullptr) *out = std::string_view(reinterpret_cast<const char*>(start), p_ - start);
    ++p_;
    return true;
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?  Exponents (which can overflow) go to the full checker.
  bool Number() {
    const unsigned char* start = p_;
    if (*p_ == '-') ++p_;
    if (p_ >= end_) return false;
    if (*p_ == '0') {
      ++p_;
    } else if (*p_ >= '1' && *p_ <= '9') {
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    } else {
      return false;
    }
    if (p_ < end_ && *p_ == '.') {
      ++p_;
      const unsigned char* digits = p_;
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      if (p_ == digits) return false;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) return false;
    return p_ - start <= 300;  // longer digit runs could overflow a double: the full checker decides
  }

  bool Literal() {
    for (const char* lit : {"true", "false", "null"}) {
      const size_t n = std::strlen(lit);
      if (static_cast<size_t>(end_ - p_) >= n && std::memcmp(p_, lit, n) == 0) {
        p_ += n;
        return true;
      }
    }
    return false;
  }

  void Ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  bool Peek(char c) const { return p_ < end_ && *p_ == static_cast<unsigned char>(c); }
  bool Expect(char c) {
    if (!Peek(c)) return false;
    ++p_;
    return true;
  }

  const unsigned char* p_;
  const unsigned char* const end_;
};

}  // namespace

bool FastJsonAccepts(std::string_view text) {
  if (text.empty()) return false;
  return Scanner(text).RunValue();
}

bool FastPromptAccepts(std::string_view prompt) {
  if (prompt.empty()) return false;
  return Scanner(prompt).Run();
}

}  // namespace comfymq
