// The fast prompt check may only accept what the full checker accepts (and should accept the common prompts).
// Differential: hand-picked edge cases, then many random mutations of real-looking prompts.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "comfymq/job.h"
#include "util/json_checks.h"
#include "util/prompt_scan.h"

namespace comfymq {
namespace {

const char* kGood =
    R"({"3": {"class_type": "KSampler", "inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8.5,)"
    R"( "sampler_name": "euler", "denoise": 1.0, "model": ["4", 0], "neg": -0.25, "flag": true, "x": null}},)"
    R"( "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},)"
    R"( "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox\n\t\"in\" snow \/ é 日本 🦊",)"
    R"( "clip": ["4", 1], "deep": [[[{"a": [1, 2, {"b": []}]}]]], "e": {}}, "_meta": {"title": "Prompt"}}})";

// What random mutations insert: JSON's structural bytes, digits, escapes, control bytes, bad and good UTF-8.
const std::string kAlphabet = "{}[]\":,.-+eE0123456789 \t\n\\/utrfalsn\x01\x7f\xc3\xa9\xed\xa0\xf0\x9f";

void ExpectAgrees(const std::string& p) {
  const bool fast = FastPromptAccepts(p);
  const bool full = CheckPromptJsonFully(p).ok();
  if (fast) EXPECT_TRUE(full) << "fast accepted what the full checker refuses: " << p;
}

TEST(PromptScan, AcceptsCommonPromptsAndAgreesOnEdgeCases) {
  EXPECT_TRUE(FastPromptAccepts(kGood));
  EXPECT_TRUE(CheckPromptJsonFully(kGood).ok());
  std::string big = R"({"1": {"class_type": "T", "inputs": {"pad": ")" + std::string(30 * 1024, 'p') + R"("}}})";
  EXPECT_TRUE(FastPromptAccepts(big));
  const std::vector<std::string> cases = {
      "",
      " ",
      "{}",
      "[]",
      "null",
      "\"s\"",
      R"({"": {"class_type": "K", "inputs": {}}})",
      R"({"1": {"class_type": "", "inputs": {}}})",
      R"({"1": {"class_type": "K"}})",
      R"({"1": {"inputs": {}}})",
      R"({"1": {"class_type": 5, "inputs": {}}})",
      R"({"1": {"class_type": "K", "inputs": []}})",
      R"({"1": {"class_type": "K", "inputs": {}, "inputs": 3}})",
      R"({"1": {"class_type": "K", "inputs": {}, "class_type": 1}})",
      R"({"1": {"class_type": "K", "inputs": {}}, })",
      R"({"1": {"class_type": "K", "inputs": {}}} x)",
      R"({"1": {"class_type": "K", "inputs": {"a": 01}}})",
      R"({"1": {"class_type": "K", "inputs": {"a": 1.}}})",
      R"({"1": {"class_type": "K", "inputs": {"a": -}}})",
      R"({"1": {"class_type": "K", "inputs": {"a": 1e5}}})",
      R"({"1": {"class_type": "K", "inputs": {"a": 1850e479084}}})",
      R"({"1": {"class_type": "K", "inputs": {"a": tru}}})",
      R"({"1": {"class_type": "K", "inputs": {"a": "\u00e9"}}})",
      R"({"1": {"class_type": "K", "inputs": {"a": "\ud800"}}})",
      R"({"1": {"class_type": "K", "inputs": {"a": "\x"}}})",
      "{\"1\": {\"class_type\": \"K\", \"inputs\": {\"a\": \"\x01\"}}}",
      "{\"1\": {\"class_type\": \"K\", \"inputs\": {\"a\": \"\xff\"}}}",
      "{\"1\": {\"class_type\": \"K\", \"inputs\": {\"a\": \"\xed\xa0\x80\"}}}",
      "{\"1\": {\"class_type\": \"K\", \"inputs\": {\"a\": \"\xc0\xaf\"}}}",
      "{\"1\": {\"class_type\": \"K\", \"inputs\": {\"a\": \"\xf4\x90\x80\x80\"}}}",
      "\xef\xbb\xbf{\"1\": {\"class_type\": \"K\", \"inputs\": {}}}",
      R"({"1": {"class_type": "K", "inputs": {"a": [1,]}}})",
      R"({"1": {"class_type": "K", "inputs": {"a": {"b" 1}}}})",
      R"({"1": {"class_type": "K", "inputs": {"a": [}}})",
      std::string(R"({"1": {"class_type": "K", "inputs": {"a": )") + std::string(400, '9') + "}}}",
      std::string(R"({"1": {"class_type": "K", "inputs": {"a": )") + std::string(2000, '[') + std::string(2000, ']') +
          "}}}",
  };
  for (const std::string& c : cases) ExpectAgrees(c);
  // Things only the full checker handles are still accepted through it.
  EXPECT_TRUE(ValidatePromptJson(R"({"1": {"class_type": "K", "inputs": {"a": "\u00e9", "b": 1e-5}}})").ok());
}

// The string scan reads 8 bytes at a time: every byte that needs a look must be caught at every offset of a word.
TEST(PromptScan, EveryOddByteIsSeenAtEveryOffsetOfALongString) {
  const std::vector<std::string> odd = {std::string(1, '\0'),
                                        "\x01",
                                        "\x1f",
                                        "\"",
                                        "\\",
                                        "\\n",
                                        "\\q",
                                        "\\u0041",
                                        "\x7f",
                                        "\x80",
                                        "\xc3\xa9",
                                        "\xc3",
                                        "\xff",
                                        "\xed\xa0\x80",
                                        "\xf0\x9f\xa6\x8a"};
  for (const std::string& o : odd) {
    for (size_t at = 0; at < 24; ++at) {
      std::string text(40, 'a');
      text.insert(at, o);
      const std::string p = R"({"1": {"class_type": "K", "inputs": {"text": ")" + text + R"("}}})";
      ExpectAgrees(p);
      // what the fast path is for (plain escapes, DEL, well-formed UTF-8) it takes itself, at any offset
      const bool common = o == "\x7f" || o == "\\n" || o == "\xc3\xa9" || o == "\xf0\x9f\xa6\x8a";
      if (common) EXPECT_TRUE(FastPromptAccepts(p)) << "odd byte(s) #" << o.size() << " at offset " << at;
    }
  }
}

TEST(PromptScan, RandomMutationsNeverMakeTheFastCheckAcceptMore) {
  std::mt19937_64 rng(20261123);
  int fast_accepted = 0;
  for (int i = 0; i < 30000; ++i) {
    std::string p = kGood;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % (p.size() + 1);
      switch (rng() % 3) {
        case 0:
          if (!p.empty() && at < p.size()) p.erase(at, 1 + rng() % 3);
          break;
        case 1: p.insert(at, 1, kAlphabet[rng() % kAlphabet.size()]); break;
        default:
          if (at < p.size()) p[at] = kAlphabet[rng() % kAlphabet.size()];
          break;
      }
    }
    const bool fast = FastPromptAccepts(p);
    fast_accepted += fast;
    if (fast) ASSERT_TRUE(CheckPromptJsonFully(p).ok()) << "fast accepted what the full checker refuses: " << p;
  }
  EXPECT_GT(fast_accepted, 100) << "mutations that keep a valid prompt should still take the fast path";
}

// The value check (wire fields) against nlohmann's json::accept: common values take the fast path, and no
// mutation of them makes it accept what nlohmann refuses.
TEST(JsonScan, RandomMutationsNeverMakeTheFastValueCheckAcceptMore) {
  const std::vector<std::string> seeds = {
      kGood,
      "{}",
      "[]",
      R"("text \"quoted\" \u00e9")",
      "-0.5",
      "true",
      "null",
      "12345678901234567890",
      R"({"attempt": 1, "batch_id": "b-1", "batch_index": 3, "prompt_id": "9b2e", "extra": [1.5, false, {}]})",
      R"({"9": {"images": [{"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}]}})"};
  for (const std::string& v : seeds) {
    if (v.find("\\u") == std::string::npos) EXPECT_TRUE(FastJsonAccepts(v)) << v;
    EXPECT_TRUE(ValidateJsonValue(v, "seed").ok()) << v;
  }
  EXPECT_FALSE(FastJsonAccepts(""));
  EXPECT_FALSE(FastJsonAccepts("{} {}"));
  EXPECT_FALSE(FastJsonAccepts("[1,]"));
  std::mt19937_64 rng(20261201);
  int fast_accepted = 0;
  for (int i = 0; i < 30000; ++i) {
    std::string p = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % (p.size() + 1);
      if (rng() % 2 == 0) {
        if (at < p.size()) p.erase(at, 1 + rng() % 2);
      } else {
        p.insert(at, 1, kAlphabet[rng() % kAlphabet.size()]);
      }
    }
    const bool fast = FastJsonAccepts(p);
    fast_accepted += fast;
    if (fast) ASSERT_TRUE(ValidateJsonValue(p, "mutant").ok()) << "fast accepted what json::accept refuses: " << p;
  }
  EXPECT_GT(fast_accepted, 100);
}

}  // namespace
}  // namespace comfymq

namespace comfymq {
namespace {

// nlohmann takes a NUL outside a string for the end of the input; every check refuses such text instead, so what
// the store accepts is what Python and browsers read. Messages quoting bytes that are not UTF-8 stay valid UTF-8.
TEST(JsonChecks, ANulByteAnywhereIsRefusedAndMessagesStayValidUtf8) {
  const std::string prompt = R"({"1": {"class_type": "X", "inputs": {}}})";
  const std::string hidden = prompt + std::string("\0{\"2\": 1}", 9);
  Status s = ValidatePromptJson(hidden);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("a NUL byte at offset " + std::to_string(prompt.size())), std::string::npos)
      << s.message();
  EXPECT_TRUE(ValidateJsonValue(std::string("[1]\0", 4), "outputs").IsInvalidArgument());
  EXPECT_TRUE(ValidateJsonObject(std::string("{}\0x", 4), "workflow").IsInvalidArgument());
  EXPECT_FALSE(JsonSyntaxAccepts(std::string("{}\0", 3)));
  s = ValidatePromptJson(prompt + "\xc2");  // the parser quotes the half of a UTF-8 sequence it read last
  ASSERT_TRUE(s.IsInvalidArgument());
  EXPECT_EQ(ValidUtf8(s.message()), s.message());
  EXPECT_NE(s.message().find("\\xc2"), std::string::npos) << s.message();
  EXPECT_EQ(ValidUtf8("ok \xe2\x82\xac \xff \xed\xa0\x80"), "ok \xe2\x82\xac \\xff \\xed\\xa0\\x80");
}

}  // namespace
}  // namespace comfymq
