#include "store/token_codec.h"

#include <random>

#include "util/checksum.h"
#include "util/coding.h"

namespace comfymq {
namespace {

// token.key := "CMQTKEY1" u64:k0 u64:k1 u32:checksum        checksum = RecordChecksum of the 24 bytes before it
constexpr char kMagic[8] = {'C', 'M', 'Q', 'T', 'K', 'E', 'Y', '1'};
constexpr size_t kFileSize = 8 + 16 + 4;
// A balanced Feistel network with a PRF round function is a pseudorandom permutation; over 32-bit halves, more
// rounds than Luby-Rackoff's four keep it so for far more observed tokens (Patarin). Each round is one SipHash.
constexpr int kRounds = 10;

std::string Encode(const SipKey& key) {
  std::string b(kMagic, sizeof(kMagic));
  PutU64(&b, key.k0);
  PutU64(&b, key.k1);
  PutU32(&b, RecordChecksum(b.data(), b.size()));
  return b;
}

bool Decode(const std::string& b, SipKey* key) {
  if (b.size() != kFileSize || b.compare(0, sizeof(kMagic), kMagic, sizeof(kMagic)) != 0) return false;
  Decoder d(std::string_view(b).substr(sizeof(kMagic)));
  uint32_t sum = 0;
  if (!d.U64(&key->k0) || !d.U64(&key->k1) || !d.U32(&sum)) return false;
  return sum == RecordChecksum(b.data(), kFileSize - 4);
}

}  // namespace

Status TokenCodec::Open(Env* env, const std::string& dir, std::vector<std::string>* warnings) {
  const std::string path = JoinPath(dir, kFileName);
  std::string text;
  Status s = env->ReadFileToString(path, &text);
  if (s.ok() && Decode(text, &key_)) return Status::OK();
  if (!s.ok() && !s.IsNotFound()) return s.WithContext("reading " + path);
  if (s.ok()) {
    warnings->push_back(std::string(kFileName) +
                        " was damaged and was made anew: results of runs that were under way "
                        "are refused and those jobs run again");
  }
  std::random_device rd;  // the kernel's random source
  key_.k0 = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  key_.k1 = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return env->WriteFileAtomically(path, Encode(key_)).WithContext("writing " + path);
}

uint64_t TokenCodec::Encrypt(uint64_t x) const {
  uint32_t l = static_cast<uint32_t>(x >> 32), r = static_cast<uint32_t>(x);
  for (int i = 0; i < kRounds; ++i) {
    const uint32_t f = static_cast<uint32_t>(SipHash64(key_, (static_cast<uint64_t>(i) << 32) | r));
    const uint32_t next_r = l ^ f;
    l = r;
    r = next_r;
  }
  return (static_cast<uint64_t>(l) << 32) | r;
}

uint64_t TokenCodec::Decrypt(uint64_t x) const {
  uint32_t l = static_cast<uint32_t>(x >> 32), r = static_cast<uint32_t>(x);
  for (int i = kRounds - 1; i >= 0; --i) {
    const uint32_t f = static_cast<uint32_t>(SipHash64(key_, (static_cast<uint64_t>(i) << 32) | l));
    const uint32_t prev_l = r ^ f;
    r = l;
    l = prev_l;
  }
  return (static_cast<uint64_t>(l) << 32) | r;
}

// Cycle walking keeps 0 out on both sides: the permutation of all 64-bit values, restricted to the non-zero ones.
uint64_t TokenCodec::External(uint64_t counter) const {
  uint64_t y = Encrypt(counter);
  while (y == 0) y = Encrypt(y);
  return y;
}

uint64_t TokenCodec::Internal(uint64_t token) const {
  if (token == 0) return 0;
  uint64_t x = Decrypt(token);
  while (x == 0) x = Decrypt(x);
  return x;
}

}  // namespace comfymq
