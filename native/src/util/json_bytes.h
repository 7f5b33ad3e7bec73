// Byte-level helpers shared by the JSON scanner (prompt_scan) and writer (json_text): runs of bytes a JSON
// string holds as they are, and UTF-8 sequences as RFC 3629 allows them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

// SSE2: every x86-64 compiler has it (GCC and Clang say __SSE2__, MSVC _M_X64).
#if defined(__SSE2__) || defined(_M_X64)
#define COMFYMQ_SSE2 1
#include <emmintrin.h>
#endif
#if defined(_MSC_VER)
#include <intrin.h>
#endif

namespace comfymq {

// Bytes a string run can skip over: printable ASCII other than '"' and '\\'.
struct PlainTable {
  bool plain[256];
  constexpr PlainTable() : plain() {
    for (int c = 0x20; c < 0x80; ++c) plain[c] = c != '"' && c != '\\';
  }
};
inline constexpr PlainTable kPlain;

// One UTF-8 sequence starting at p (a byte >= 0x80), as RFC 3629 allows it (no overlongs, no surrogates, at most
// U+10FFFF); returns its length or 0.
inline size_t Utf8Length(const unsigned char* p, const unsigned char* end) {
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

#if !defined(COMFYMQ_SSE2)
// True when none of the 8 bytes at p needs a look: no '"', no '\\', no control byte, no byte >= 0x80 (SWAR: the
// zero-byte test may also flag a byte above a real hit, never miss one; a flagged word goes byte by byte).
inline bool AllPlain8(const unsigned char* p) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL, kHigh = 0x8080808080808080ULL;
  uint64_t x;
  std::memcpy(&x, p, 8);
  auto has_zero = [](uint64_t v) { return (v - kOnes) & ~v & kHigh; };
  const uint64_t special =
      has_zero(x ^ (kOnes * '"')) | has_zero(x ^ (kOnes * '\\')) | ((x - kOnes * 0x20) & ~x & kHigh) | (x & kHigh);
  return special == 0;
}
#endif

// The index of the lowest set bit of x (x != 0).
inline int LowestBit(unsigned x) {
#if defined(_MSC_VER)
  unsigned long i;
  _BitScanForward(&i, x);
  return static_cast<int>(i);
#else
  return __builtin_ctz(x);
#endif
}

#if defined(COMFYMQ_SSE2)
// The offset of the first byte among the 16 at p that needs a look ('"', '\\', a control byte or a byte >= 0x80),
// or 16 when there is none. A signed compare below 0x20 catches both the control bytes and the bytes >= 0x80.
inline int FirstSpecial16(const unsigned char* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i hits =
      _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                   _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)));
  const int mask = _mm_movemask_epi8(hits);
  return mask == 0 ? 16 : LowestBit(static_cast<unsigned>(mask));
}
#endif

// Moves p past the plain bytes (printable ASCII other than '"' and '\\') that start at p, up to end.
inline const unsigned char* SkipPlain(const unsigned char* p, const unsigned char* end) {
#if defined(COMFYMQ_SSE2)
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

// A control code: C0 (U+0000..U+001F), DEL, C1 (U+0080..U+009F), or a line or paragraph separator (U+2028,
// U+2029). Node ids and class types may hold none (they end up in logs and menus).
// ControlCodeAt: the code point of the control code whose UTF-8 starts at p[i] (its length in *len), or -1.
inline int ControlCodeAt(const unsigned char* p, size_t n, size_t i, size_t* len) {
  const unsigned char c = p[i];
  *len = 1;
  if (c < 0x20 || c == 0x7f) return c;
  if (c == 0xC2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9F) {
    *len = 2;
    return p[i + 1];
  }
  if (c == 0xE2 && i + 2 < n && p[i + 1] == 0x80 && (p[i + 2] == 0xA8 || p[i + 2] == 0xA9)) {
    *len = 3;
    return 0x2000 + p[i + 2] - 0x80;
  }
  return -1;
}

// True when the UTF-8 text p[0..n) holds a control code.
inline bool HasControlCode(const unsigned char* p, size_t n) {
  size_t len;
  for (size_t i = 0; i < n; ++i) {
    if (ControlCodeAt(p, n, i, &len) >= 0) return true;
  }
  return false;
}

}  // namespace comfymq
