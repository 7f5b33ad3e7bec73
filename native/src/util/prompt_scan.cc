#include "util/prompt_scan.h"

#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace comfymq {
namespace {

// Bytes a string run can skip over: printable ASCII other than '"' and '\\'.
struct PlainTable {
  bool plain[256];
  constexpr PlainTable() : plain() {
    for (int c = 0x20; c < 0x80; ++c) plain[c] = c != '"' && c != '\\';
  }
};
constexpr PlainTable kPlain;

// One UTF-8 sequence starting at p (a byte >= 0x80), as RFC 3629 allows it (no overlongs, no surrogates, at most
// U+10FFFF); returns its length or 0.
size_t Utf8Length(const unsigned char* p, const unsigned char* end) {
  const unsigned char c = p[0];
  auto cont = [&](size_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return p + i < end && p[i] >= lo && p[i] <= hi;
  };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

#if !defined(__SSE2__)
// True when none of the 8 bytes at p needs a look: no '"', no '\\', no control byte, no byte >= 0x80 (SWAR: the
// zero-byte test may also flag a byte above a real hit, never miss one; a flagged word goes byte by byte).
inline bool AllPlain8(const unsigned char* p) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL, kHigh = 0x8080808080808080ULL;
  uint64_t x;
  std::memcpy(&x, p, 8);
  auto has_zero = [](uint64_t v) { return (v - kOnes) & ~v & kHigh; };
  const uint64_t special = has_zero(x ^ (kOnes * '"')) | has_zero(x ^ (kOnes * '\\')) |
                           ((x - kOnes * 0x20) & ~x & kHigh) | (x & kHigh);
  return special == 0;
}
#endif

#if defined(__SSE2__)
// The offset of the first byte among the 16 at p that needs a look ('"', '\\', a control byte or a byte >= 0x80),
// or 16 when there is none. A signed compare below 0x20 catches both the control bytes and the bytes >= 0x80.
inline int FirstSpecial16(const unsigned char* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i hits = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                                 _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                                    _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)));
  const int mask = _mm_movemask_epi8(hits);
  return mask == 0 ? 16 : __builtin_ctz(static_cast<unsigned>(mask));
}
#endif

// Moves p past the plain bytes (printable ASCII other than '"' and '\\') that start at p, up to end.
inline const unsigned char* SkipPlain(const unsigned char* p, const unsigned char* end) {
#if defined(__SSE2__)
  while (end - p >= 16) {
    const int i = FirstSpecial16(p);
    p += i;
    if (i < 16) return p;
  }
#else
  while (end - p >= 8 && AllPlain8(p)) p += 8;
#endif
  while (p < end && kPlain.plain[*p]) ++p;
  return p;
}

class Scanner {
 public:
  Scanner(std::string_view s)
      : p_(reinterpret_cast<const unsigned char*>(s.data())), end_(p_ + s.size()) {}

  // Any JSON value, alone (whitespace around it allowed).
  bool RunValue() {
    Ws();
    const bool ok = Value();
    Ws();
    return ok && p_ == end_;
  }

  bool Run() {
    Ws();
    size_t nodes = 0;  // the top level must be an object of nodes
    const bool ok = Object([&](std::string_view id) {
      nodes++;
      return !id.empty() && Node();
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
        return Peek('"') && String(&v) && !v.empty();
      }
      if (key == "inputs") {
        has_inputs = true;
        return Peek('{') && Value();
      }
      return Value();
    });
    return ok && has_class_type && has_inputs;
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

  // Any JSON value, nesting kept on an explicit stack (no recursion).
  bool Value() {
    unsigned char stack[kMaxDepth];
    size_t depth = 0;
    for (;;) {
      // A value starts here.
      if (p_ >= end_) return false;
      const unsigned char c = *p_;
      if (c == '{' || c == '[') {
        if (depth == kMaxDepth) return false;
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
          case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            p_ += 2;
            continue;
          default:
            return false;  // \u escapes (surrogate pairs) and bad escapes: the full checker decides
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

  static constexpr size_t kMaxDepth = 512;  // deeper nesting goes to the full checker
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
