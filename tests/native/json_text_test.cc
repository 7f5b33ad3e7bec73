// util/json_text: the text must equal nlohmann's dump(-1, ' ', false, replace) of the same values, for every
// byte a string can hold (controls, quotes, DEL, every valid and invalid UTF-8 form, alone and inside long
// plain runs) and for objects.
#include "util/json_text.h"

#include "store/status_doc.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

namespace comfymq {
namespace {

using json = nlohmann::json;

std::string Nlohmann(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string Ours(std::string_view s) {
  std::string out = "prefix:";
  AppendJsonString(&out, s);
  EXPECT_EQ(out.compare(0, 7, "prefix:"), 0);  // appends, never touches what was there
  return out.substr(7);
}

TEST(JsonText, StringsMatchNlohmannForEveryByteAndUtf8Form) {
  std::vector<std::string> cases = {"", "plain", "quote \" backslash \\ slash /", "\b\f\n\r\t", "\x7f", "caf\xc3\xa9",
                                    "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xef\xbf\xbd",
                                    // invalid: lone continuation, truncated, overlong, surrogate, > U+10FFFF
                                    "\x80", "a\xc3", "\xe2\x82", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
                                    "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff",
                                    "ok\xfe"
                                    "ok"};
  for (int c = 0; c < 256; ++c) cases.push_back(std::string("x") + static_cast<char>(c) + "y");
  std::mt19937_64 rng(7);
  for (int i = 0; i < 3000; ++i) {  // random strings, biased towards the interesting bytes
    std::string s(rng() % 12, '\0');
    for (char& ch : s) {
      const uint64_t r = rng();
      ch = static_cast<char>(r % 4 == 0 ? 0x80 + (r >> 8) % 0x80 : r % 4 == 1 ? (r >> 8) % 0x20 : (r >> 8) % 256);
    }
    cases.push_back(s);
  }
  for (int i = 0; i < 3000; ++i) {  // longer, mostly plain: the 16-byte runs, a special byte at every offset
    std::string s(rng() % 80, 'a');
    for (char& ch : s) {
      const uint64_t r = rng();
      ch = static_cast<char>(r % 10 != 0 ? 0x20 + (r >> 8) % 0x5f : (r >> 8) % 256);
    }
    cases.push_back(s);
  }
  for (const std::string& s : cases)
    EXPECT_EQ(Ours(s), Nlohmann(json(s))) << json(s).dump(-1, ' ', true, json::error_handler_t::replace);
}

TEST(JsonText, ObjectsKeepCallOrderAndMatchNlohmann) {
  std::string text = JsonObjectText()
                         .Str("type", "job")
                         .Int("neg", -5)
                         .UInt("big", 18446744073709551615ull)
                         .Bool("yes", true)
                         .Null("none")
                         .Raw("obj", R"({"a":[1,2]})")
                         .Str("k\"ey", "v\n")
                         .Done();
  EXPECT_EQ(
      text,
      R"({"type":"job","neg":-5,"big":18446744073709551615,"yes":true,"none":null,"obj":{"a":[1,2]},"k\"ey":"v\n"})");
  json parsed = json::parse(text);
  EXPECT_EQ(parsed["big"].get<uint64_t>(), 18446744073709551615ull);
  EXPECT_EQ(JsonObjectText().Done(), "{}");
}

TEST(JsonText, FirstHistoryEntryIsWhatTheDocumentPathWrites) {
  RunOutcome run;
  run.attempt = 1;
  run.worker_id = "gpu-\"2\"\n\xc3\xa9";
  run.started_ms = 1700000000123;
  run.ended_ms = 1700000004567;
  run.outcome = "succeeded";
  json want = json::array({{{"attempt", 1},
                            {"worker", run.worker_id},
                            {"started_ms", run.started_ms},
                            {"ended_ms", run.ended_ms},
                            {"outcome", "succeeded"}}});
  EXPECT_EQ(AppendHistory("", run, 20), Nlohmann(want));
  // The next entry goes through the document path and keeps the first one as it was.
  run.attempt = 2;
  run.error_json = R"({"type":"x","message":"m"})";
  std::string two = AppendHistory(AppendHistory("", RunOutcome{1, "w", 1, 2, "lease_lost", ""}, 20), run, 20);
  json parsed = json::parse(two);
  ASSERT_EQ(parsed.size(), 2u);
  EXPECT_EQ(parsed[0]["outcome"], "lease_lost");
  EXPECT_EQ(parsed[1]["error"]["type"], "x");
}

}  // namespace
}  // namespace comfymq
