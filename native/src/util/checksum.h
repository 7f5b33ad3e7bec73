// Record checksums (xxHash XXH3, 32 low bits) and string hashing for in-memory indexes.
#pragma once

#include <xxhash.h>

#include <cstdint>
#include <string_view>

namespace comfymq {

inline uint32_t RecordChecksum(const void* data, size_t n) { return static_cast<uint32_t>(XXH3_64bits(data, n)); }

inline uint64_t Hash64(std::string_view s) { return XXH3_64bits(s.data(), s.size()); }

}  // namespace comfymq
