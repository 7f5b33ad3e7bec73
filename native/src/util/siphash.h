// SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit pseudorandom function, for values an outsider must
// not be able to predict (fencing tokens). Not for checksums (util/checksum.h) or passwords.
#pragma once

#include <cstdint>
#include <cstring>

namespace comfymq {

struct SipKey {
  uint64_t k0 = 0, k1 = 0;
};

// SipHash-2-4 of one 64-bit message word (the reference algorithm for an 8-byte input, little-endian).
inline uint64_t SipHash64(const SipKey& key, uint64_t m) {
  uint64_t v0 = 0x736f6d6570736575ULL ^ key.k0, v1 = 0x646f72616e646f6dULL ^ key.k1;
  uint64_t v2 = 0x6c7967656e657261ULL ^ key.k0, v3 = 0x7465646279746573ULL ^ key.k1;
  auto rotl = [](uint64_t x, int b) { return (x << b) | (x >> (64 - b)); };
  auto round = [&] {
    v0 += v1;
    v1 = rotl(v1, 13);
    v1 ^= v0;
    v0 = rotl(v0, 32);
    v2 += v3;
    v3 = rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = rotl(v1, 17);
    v1 ^= v2;
    v2 = rotl(v2, 32);
  };
  v3 ^= m;
  round();
  round();
  v0 ^= m;
  const uint64_t last = 8ULL << 56;  // the message length (8 bytes) in the top byte of the final block
  v3 ^= last;
  round();
  round();
  v0 ^= last;
  v2 ^= 0xff;
  round();
  round();
  round();
  round();
  return v0 ^ v1 ^ v2 ^ v3;
}

}  // namespace comfymq
