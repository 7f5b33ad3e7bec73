// How a job record holds its prompt and workflow: as the text itself, or as one LZ4 block when the text is
// large and compresses well (format in docs/store-format.md, job payload version 2).
// PackText runs in the enqueuing caller's thread, before the group commit, so producers compress in
// parallel and the group leader only copies the (smaller) bytes. UnpackText treats its input as untrusted:
// a damaged or lying record is a Corruption status, never a crash or an unbounded allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "comfymq/status.h"

namespace comfymq::records {

// The largest prompt or workflow a store accepts (StoreOptions::max_prompt_bytes may not exceed it), and so
// the largest raw_length a compressed text may claim.
constexpr size_t kMaxTextBytes = 256u << 20;
// Texts shorter than this are stored raw: compressing them saves little disk bandwidth for its CPU.
constexpr size_t kCompressMinBytes = 4096;
// An LZ4 block is kept only if it is smaller than this share of the text (in tenths): 9 = under 90%.
constexpr size_t kCompressMaxTenths = 9;
// No LZ4 block decompresses to more than this many times its own size (a length byte adds at most 255).
constexpr uint64_t kLz4MaxExpansion = 255;

enum class TextCodec : uint8_t {
  kRaw = 0,  // bytes are the text
  kLz4 = 1,  // bytes are one LZ4 block (LZ4_compress_default) of raw_length bytes of text
};

// A prompt or workflow as a job record holds it. `bytes` views the buffer it was packed into or decoded
// from, and is valid as long as that buffer is.
struct StoredText {
  TextCodec codec = TextCodec::kRaw;
  uint32_t raw_length = 0;  // kLz4 only: the length of the text
  std::string_view bytes;

  static StoredText Raw(std::string_view text) { return StoredText{TextCodec::kRaw, 0, text}; }
  // The length of the text once unpacked.
  size_t text_size() const { return codec == TextCodec::kRaw ? bytes.size() : raw_length; }
};

// Chooses how to store `text`: an LZ4 block (written into *scratch, which the result then views) when the
// text is at least kCompressMinBytes and the block is under kCompressMaxTenths of it; else the text itself
// (viewing `text`). Either way the result unpacks to exactly `text`.
StoredText PackText(std::string_view text, std::string* scratch);

// Replaces *out with the text. For kLz4, before allocating anything: refuses a raw_length above
// `max_text_bytes` or above what the block could expand to (kLz4MaxExpansion); then refuses a block that
// does not decompress (LZ4_decompress_safe) to exactly raw_length bytes. All of these are Corruption, and
// leave *out empty. An unknown codec is Corruption too.
Status UnpackText(const StoredText& t, size_t max_text_bytes, std::string* out);

}  // namespace comfymq::records
