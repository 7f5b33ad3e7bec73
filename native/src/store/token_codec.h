// Fencing tokens as callers see them. Inside the store a run's token is a counter (1, 2, 3, ...): recovery and
// the durable token reservation (docs/store-format.md) rely on its order. Outside, a caller (the broker, a
// worker) sees that counter through a keyed permutation of the 64-bit values: unique as the counter is, but not
// guessable from tokens one has seen. The key is the store's own, kept in its directory as `token.key`.
//
// Thread safety: Open once before use; then External and Internal are const and thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comfymq/env.h"
#include "comfymq/status.h"
#include "util/siphash.h"

namespace comfymq {

class TokenCodec {
 public:
  static constexpr const char* kFileName = "token.key";

  // Reads the store's key from <dir>/token.key, or makes one (random, written atomically and synced) when it is
  // missing; a damaged file is replaced, with a warning: tokens of runs that were out then are no longer
  // recognised, so their workers' results are refused and the jobs run again.
  Status Open(Env* env, const std::string& dir, std::vector<std::string>* warnings);

  // The token callers see for internal counter `counter` (>= 1). Never 0.
  uint64_t External(uint64_t counter) const;
  // The counter behind a token callers give; 0 (no run) for 0.
  uint64_t Internal(uint64_t token) const;

 private:
  uint64_t Encrypt(uint64_t x) const;
  uint64_t Decrypt(uint64_t x) const;
  SipKey key_;
};

}  // namespace comfymq
