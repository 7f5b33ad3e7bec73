#include "store/text_codec.h"

#include <lz4.h>

#include <algorithm>
#include <climits>
#include <memory>

namespace comfymq::records {

StoredText PackText(std::string_view text, std::string* scratch) {
  if (text.size() < kCompressMinBytes || text.size() > kMaxTextBytes) return StoredText::Raw(text);
  const int n = static_cast<int>(text.size());
  const int bound = LZ4_compressBound(n);
  // Compressed into a buffer this thread keeps (texts up to kKeptBufferBytes), then only the block is
  // copied out: sizing *scratch to the bound would zero-fill it first (a third of the cost of a 30 KB text).
  constexpr int kKeptBufferBytes = 1 << 20;
  thread_local std::unique_ptr<char[]> kept;
  std::unique_ptr<char[]> once;
  char* buf;
  if (bound <= kKeptBufferBytes) {
    if (!kept) kept.reset(new char[kKeptBufferBytes]);
    buf = kept.get();
  } else {
    once.reset(new char[static_cast<size_t>(bound)]);
    buf = once.get();
  }
  const int c = LZ4_compress_default(text.data(), buf, n, bound);
  if (c <= 0 || static_cast<size_t>(c) * 10 >= text.size() * kCompressMaxTenths) return StoredText::Raw(text);
  scratch->assign(buf, static_cast<size_t>(c));
  return StoredText{TextCodec::kLz4, static_cast<uint32_t>(text.size()), *scratch};
}

Status UnpackText(const StoredText& t, size_t max_text_bytes, std::string* out) {
  out->clear();
  if (t.codec == TextCodec::kRaw) {
    out->assign(t.bytes.data(), t.bytes.size());
    return Status::OK();
  }
  if (t.codec != TextCodec::kLz4) {
    return Status::Corruption("text has unknown codec " + std::to_string(static_cast<int>(t.codec)));
  }
  const size_t limit = std::min(max_text_bytes, kMaxTextBytes);
  if (t.raw_length > limit) {
    return Status::Corruption("compressed text claims " + std::to_string(t.raw_length) + " bytes, more than the " +
                              std::to_string(limit) + " a text may have");
  }
  if (t.raw_length > kLz4MaxExpansion * t.bytes.size() || t.bytes.size() > static_cast<size_t>(INT_MAX)) {
    return Status::Corruption("compressed text claims " + std::to_string(t.raw_length) + " bytes from a " +
                              std::to_string(t.bytes.size()) + "-byte LZ4 block, which cannot hold that many");
  }
  out->resize(t.raw_length);
  const int got = LZ4_decompress_safe(t.bytes.data(), out->data(), static_cast<int>(t.bytes.size()),
                                      static_cast<int>(t.raw_length));
  if (got != static_cast<int>(t.raw_length)) {
    out->clear();
    return Status::Corruption(got < 0 ? "compressed text is damaged (its LZ4 block does not decode to the " +
                                            std::to_string(t.raw_length) + " bytes its record says)"
                                      : "compressed text is damaged (decodes to " + std::to_string(got) +
                                            " bytes, its record says " + std::to_string(t.raw_length) + ")");
  }
  return Status::OK();
}

}  // namespace comfymq::records
