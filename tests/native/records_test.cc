// Job payloads and their texts (text_codec.h): which texts are compressed, round trips of both payload
// versions, and every way a compressed text can lie (damaged block, wrong or huge raw_length, unknown codec)
// coming back as Corruption, never a crash.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "store/records.h"
#include "store/text_codec.h"
#include "util/coding.h"

namespace comfymq::records {
namespace {

// A JSON-ish text of `size` bytes that compresses well (repeated node structure, as real prompts have).
std::string Compressible(size_t size) {
  std::string s = "{";
  for (int n = 0; s.size() < size; ++n) {
    s += "\"" + std::to_string(n) +
         "\": {\"class_type\": \"KSampler\", \"inputs\": {\"seed\": " + std::to_string(n * 7919) +
         ", \"steps\": 20, \"cfg\": 7.5, \"model\": [\"4\", 0]}}, ";
  }
  s.resize(size);
  return s;
}

// Random base64: LZ4 cannot shrink it by 10%.
std::string Incompressible(size_t size, uint64_t seed = 1) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::mt19937_64 rng(seed);
  std::string s(size, 'A');
  for (char& c : s) c = kAlphabet[rng() % 64];
  return s;
}

JobView SampleJob() {
  JobView v;
  v.id = 0x0123456789abcdefull;
  v.priority = -3;
  v.max_attempts = 5;
  v.timeout_ms = 60000;
  v.create_time_ms = 1750000000000;
  v.prompt_id = "pid-1";
  v.batch_id = "batch";
  v.owner = "alice";
  return v;
}

TEST(TextCodecTest, SmallTextsStayRaw) {
  std::string scratch;
  const std::string text = Compressible(kCompressMinBytes - 1);
  StoredText t = PackText(text, &scratch);
  EXPECT_EQ(t.codec, TextCodec::kRaw);
  EXPECT_EQ(t.bytes.data(), text.data()) << "a raw text is not copied";
  EXPECT_EQ(t.text_size(), text.size());
}

TEST(TextCodecTest, LargeCompressibleTextIsCompressedAndRoundTrips) {
  std::string scratch, out;
  const std::string text = Compressible(30 << 10);
  StoredText t = PackText(text, &scratch);
  ASSERT_EQ(t.codec, TextCodec::kLz4);
  EXPECT_EQ(t.raw_length, text.size());
  EXPECT_EQ(t.text_size(), text.size());
  EXPECT_LT(t.bytes.size() * 10, text.size() * kCompressMaxTenths);
  ASSERT_TRUE(UnpackText(t, kMaxTextBytes, &out).ok());
  EXPECT_EQ(out, text);
}

TEST(TextCodecTest, IncompressibleTextStaysRaw) {
  std::string scratch, out;
  const std::string text = Incompressible(30 << 10);
  StoredText t = PackText(text, &scratch);
  EXPECT_EQ(t.codec, TextCodec::kRaw);
  ASSERT_TRUE(UnpackText(t, kMaxTextBytes, &out).ok());
  EXPECT_EQ(out, text);
}

TEST(TextCodecTest, DamagedOrLyingBlocksAreCorruption) {
  std::string scratch, out;
  const std::string text = Compressible(30 << 10);
  const StoredText good = PackText(text, &scratch);
  ASSERT_EQ(good.codec, TextCodec::kLz4);
  auto expect_corrupt = [&](StoredText t, size_t limit, const char* why) {
    out = "left over";
    Status s = UnpackText(t, limit, &out);
    EXPECT_TRUE(s.IsCorruption()) << why << ": " << s.ToString();
    EXPECT_TRUE(out.empty()) << why;
  };
  StoredText t = good;
  t.raw_length = good.raw_length - 1;
  expect_corrupt(t, kMaxTextBytes, "raw_length one short");
  t.raw_length = good.raw_length + 1;
  expect_corrupt(t, kMaxTextBytes, "raw_length one long");
  t = good;
  expect_corrupt(t, good.raw_length - 1, "raw_length above the caller's limit");
  t.raw_length = 0xFFFFFFFFu;
  expect_corrupt(t, ~size_t{0}, "raw_length of 4 GiB");
  t.raw_length = static_cast<uint32_t>(kLz4MaxExpansion * good.bytes.size() + 1);
  expect_corrupt(t, kMaxTextBytes, "more than the block could expand to");
  const std::string truncated(good.bytes.substr(0, good.bytes.size() / 2));
  t = good;
  t.bytes = truncated;
  expect_corrupt(t, kMaxTextBytes, "truncated block");
  const std::string garbage(good.bytes.size(), '\xff');
  t.bytes = garbage;
  expect_corrupt(t, kMaxTextBytes, "garbage block");
  t.bytes = std::string_view();
  t.raw_length = 0;
  expect_corrupt(t, kMaxTextBytes, "empty block");
  t = good;
  t.codec = static_cast<TextCodec>(7);
  expect_corrupt(t, kMaxTextBytes, "unknown codec");
}

TEST(RecordsTest, JobVersion2RoundTripsRawAndCompressedTexts) {
  std::string prompt_block, workflow_block;
  const std::string prompt = Compressible(30 << 10);
  const std::string workflow = Incompressible(8 << 10);
  JobView v = SampleJob();
  v.prompt = PackText(prompt, &prompt_block);
  v.workflow = PackText(workflow, &workflow_block);
  std::string payload;
  EncodeJob(v, &payload);
  EXPECT_EQ(static_cast<uint8_t>(payload[0]), kJobVersion);
  EXPECT_LT(payload.size(), prompt.size() / 2 + workflow.size());
  PatchJobId(&payload, 42);

  JobView d;
  ASSERT_TRUE(DecodeJob(payload, &d).ok());
  EXPECT_EQ(d.id, 42u);
  EXPECT_EQ(d.priority, -3);
  EXPECT_EQ(d.max_attempts, 5);
  EXPECT_EQ(d.timeout_ms, 60000);
  EXPECT_EQ(d.create_time_ms, 1750000000000);
  EXPECT_EQ(d.prompt_id, "pid-1");
  EXPECT_EQ(d.batch_id, "batch");
  EXPECT_EQ(d.owner, "alice");
  EXPECT_EQ(d.prompt.codec, TextCodec::kLz4);
  EXPECT_EQ(d.workflow.codec, TextCodec::kRaw);
  std::string out;
  ASSERT_TRUE(UnpackText(d.prompt, kMaxTextBytes, &out).ok());
  EXPECT_EQ(out, prompt);
  ASSERT_TRUE(UnpackText(d.workflow, kMaxTextBytes, &out).ok());
  EXPECT_EQ(out, workflow);

  // Every truncation is malformed, never a crash.
  for (size_t n = 0; n < payload.size(); n += 97) EXPECT_TRUE(DecodeJob(payload.substr(0, n), &d).IsCorruption());
  // An unknown codec byte (the prompt's, right after the three ids) is malformed.
  std::string bad = payload;
  bad[1 + 8 + 4 + 2 + 8 + 8 + (4 + 5) + (4 + 5) + (4 + 5)] = 2;
  EXPECT_TRUE(DecodeJob(bad, &d).IsCorruption());
}

TEST(RecordsTest, JobVersion1IsStillRead) {
  // Version 1, as stores written before compression hold it: texts as plain bytes, no codec.
  std::string payload;
  PutU8(&payload, 1);
  PutU64(&payload, 7);
  PutI32(&payload, 2);
  PutU16(&payload, 3);
  PutI64(&payload, 0);
  PutI64(&payload, 1750000000000);
  PutBytes(&payload, "pid");
  PutBytes(&payload, "");
  PutBytes(&payload, "bob");
  const std::string prompt = Compressible(30 << 10);
  PutBytes(&payload, prompt);
  PutBytes(&payload, "{}");
  JobView d;
  ASSERT_TRUE(DecodeJob(payload, &d).ok());
  EXPECT_EQ(d.id, 7u);
  EXPECT_EQ(d.owner, "bob");
  EXPECT_EQ(d.prompt.codec, TextCodec::kRaw);
  std::string out;
  ASSERT_TRUE(UnpackText(d.prompt, kMaxTextBytes, &out).ok());
  EXPECT_EQ(out, prompt);
  ASSERT_TRUE(UnpackText(d.workflow, kMaxTextBytes, &out).ok());
  EXPECT_EQ(out, "{}");
  payload[0] = 3;  // a version this build does not know
  EXPECT_TRUE(DecodeJob(payload, &d).IsCorruption());
}

}  // namespace
}  // namespace comfymq::records
