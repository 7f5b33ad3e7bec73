// Little-endian binary encoding for on-disk records. Encoders append to a std::string; the Decoder reads
// from a view and reports truncation or overlong fields as Corruption (never reads out of bounds).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "comfymq/status.h"

namespace comfymq {

inline void PutU8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }

template <typename T>
inline void PutFixed(std::string* out, T v) {
  char buf[sizeof(T)];
  for (size_t i = 0; i < sizeof(T); ++i) buf[i] = static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff);
  out->append(buf, sizeof(T));
}
inline void PutU16(std::string* out, uint16_t v) { PutFixed(out, v); }
inline void PutU32(std::string* out, uint32_t v) { PutFixed(out, v); }
inline void PutU64(std::string* out, uint64_t v) { PutFixed(out, v); }
inline void PutI32(std::string* out, int32_t v) { PutFixed(out, static_cast<uint32_t>(v)); }
inline void PutI64(std::string* out, int64_t v) { PutFixed(out, static_cast<uint64_t>(v)); }
// A length-prefixed (u32) byte string.
inline void PutBytes(std::string* out, std::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s.data(), s.size());
}

template <typename T>
inline T LoadFixed(const char* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return static_cast<T>(v);
}
inline void StoreU32At(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

class Decoder {
 public:
  explicit Decoder(std::string_view in) : in_(in) {}

  bool U8(uint8_t* v) { return Fixed(v); }
  bool U16(uint16_t* v) { return Fixed(v); }
  bool U32(uint32_t* v) { return Fixed(v); }
  bool U64(uint64_t* v) { return Fixed(v); }
  bool I32(int32_t* v) {
    uint32_t u;
    if (!Fixed(&u)) return false;
    *v = static_cast<int32_t>(u);
    return true;
  }
  bool I64(int64_t* v) {
    uint64_t u;
    if (!Fixed(&u)) return false;
    *v = static_cast<int64_t>(u);
    return true;
  }
  // A view into the input; valid while the input is.
  bool Bytes(std::string_view* v) {
    uint32_t n;
    if (!U32(&n) || n > in_.size() - pos_) return Fail();
    *v = in_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == in_.size(); }
  bool failed() const { return failed_; }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  template <typename T>
  bool Fixed(T* v) {
    if (in_.size() - pos_ < sizeof(T)) return Fail();
    *v = LoadFixed<T>(in_.data() + pos_);
    pos_ += sizeof(T);
    return true;
  }
  bool Fail() {
    failed_ = true;
    return false;
  }
  std::string_view in_;
  size_t pos_ = 0;
  bool failed_ = false;
};

}  // namespace comfymq
