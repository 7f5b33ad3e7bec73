// The wire codec: every command round-trips, and every malformed input is refused with a reason (never a
// crash): truncation, trailing bytes, wrong frame counts, other versions, bad names, counts and JSON.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <set>
#include <tuple>

#include "comfymq/capabilities.h"
#include "net/protocol.h"
#include "testing/api_prompts.h"

namespace comfymq::proto {
namespace {

Status DecodeFrames(const std::vector<std::string>& frames, Message* m) {
  std::vector<std::string_view> v(frames.begin(), frames.end());
  return Decode(v, m);
}

Message RoundTrip(const Message& in) {
  Message out;
  Status s = DecodeFrames(Encode(in), &out);
  EXPECT_TRUE(s.ok()) << CmdName(in.cmd) << ": " << s.ToString();
  EXPECT_EQ(Encode(out), Encode(in)) << CmdName(in.cmd);
  return out;
}

TEST(Protocol, EveryCommandRoundTrips) {
  Message hello;
  hello.cmd = Cmd::kHello;
  hello.worker_id = "gpu-1";
  hello.name = "GPU one";
  hello.capacity = 2;
  hello.info_json = "{\"gpu\": \"RTX\"}";
  hello.caps_json = "{\"node_classes\": [\"KSampler\"]}";
  hello.held = {{7, 9}, {8, 10}};
  Message h = RoundTrip(hello);
  EXPECT_EQ(h.worker_id, "gpu-1");
  ASSERT_EQ(h.held.size(), 2u);
  EXPECT_EQ(h.held[1].token, 10u);

  Message result;
  result.cmd = Cmd::kResult;
  result.job_id = 5;
  result.token = 6;
  result.json = "{\"9\": {\"images\": []}}";
  result.files = {{"a.png", 3, std::string(64, 'a'), "image/png"}};
  EXPECT_EQ(RoundTrip(result).files[0].name, "a.png");

  Message chunk;
  chunk.cmd = Cmd::kChunk;
  chunk.job_id = 5;
  chunk.token = 6;
  chunk.file_name = "a.png";
  chunk.file_size = 3;
  chunk.data = "abc";
  chunk.chunk_checksum = ChunkChecksum("abc");
  chunk.last = true;
  chunk.file_sha256 = std::string(64, 'b');
  EXPECT_EQ(RoundTrip(chunk).data, "abc");

  for (Cmd c : {Cmd::kReady, Cmd::kHeartbeat, Cmd::kBye, Cmd::kPing, Cmd::kCapsRequest, Cmd::kCancelled}) {
    Message m;
    m.cmd = c;
    m.credit = 1;
    RoundTrip(m);
  }
  Message job;
  job.cmd = Cmd::kJob;
  job.prompt_json = "{\"1\": {}}";
  job.extra_json = "{\"prompt_id\": \"p\"}";
  RoundTrip(job);
  Message welcome;
  welcome.cmd = Cmd::kWelcome;
  welcome.heartbeat_ms = 1000;
  welcome.liveness = 3;
  welcome.session = "s";
  welcome.dropped = {{1, 2}};
  RoundTrip(welcome);
  Message fail;
  fail.cmd = Cmd::kFail;
  fail.json = "{\"type\": \"x\"}";
  fail.retryable = true;
  EXPECT_TRUE(RoundTrip(fail).retryable);
  Message ack;
  ack.cmd = Cmd::kAck;
  ack.ack = AckKind::kDuplicate;
  EXPECT_EQ(RoundTrip(ack).ack, AckKind::kDuplicate);
  Message cack;
  cack.cmd = Cmd::kChunkAck;
  cack.chunk_status = ChunkStatus::kResume;
  cack.offset = 1 << 20;
  EXPECT_EQ(RoundTrip(cack).offset, 1u << 20);

  Message fetch;
  fetch.cmd = Cmd::kFetch;
  fetch.fetch = 9;
  fetch.job_id = 5;
  fetch.token = 6;
  fetch.file_sha256 = std::string(64, 'c');
  fetch.offset = 2u << 20;
  fetch.count = kChunkWindow;
  Message f = RoundTrip(fetch);
  EXPECT_EQ(f.fetch, 9u);
  EXPECT_EQ(f.count, kChunkWindow);
  Message input;
  input.cmd = Cmd::kInput;
  input.fetch = 9;
  input.file_sha256 = std::string(64, 'c');
  input.offset = 1;
  input.file_size = 4;
  input.data = "abc";
  input.chunk_checksum = ChunkChecksum("abc");
  Message i = RoundTrip(input);
  EXPECT_EQ(i.data, "abc");
  EXPECT_EQ(i.file_size, 4u);
  Message kept;
  kept.cmd = Cmd::kInputs;
  kept.inputs = {std::string(64, 'd'), std::string(64, 'e')};
  EXPECT_EQ(RoundTrip(kept).inputs, kept.inputs);
  input.data.clear();
  input.chunk_status = ChunkStatus::kRefused;
  input.reason = "not yours";
  EXPECT_EQ(RoundTrip(input).reason, "not yours");
}

TEST(Protocol, MalformedInputIsRefusedWithAReason) {
  Message m;
  Message ready;
  ready.cmd = Cmd::kReady;
  ready.credit = 1;
  auto good = Encode(ready);

  EXPECT_NE(DecodeFrames({}, &m).message().find("empty"), std::string::npos);
  EXPECT_NE(DecodeFrames({"XXXX\x01\x02", good[1]}, &m).message().find("not a CMQP"), std::string::npos);
  EXPECT_NE(DecodeFrames({std::string("CMQP\x01\x63", 6), good[1]}, &m).message().find("unknown command"),
            std::string::npos);
  EXPECT_NE(DecodeFrames({good[0]}, &m).message().find("frames"), std::string::npos);
  EXPECT_NE(DecodeFrames({good[0], good[1], "x"}, &m).message().find("frames"), std::string::npos);
  EXPECT_NE(DecodeFrames({good[0], good[1].substr(0, 2)}, &m).message().find("truncated"), std::string::npos);
  EXPECT_NE(DecodeFrames({good[0], good[1] + "x"}, &m).message().find("trailing"), std::string::npos);

  auto other = good;
  other[0][4] = 2;
  Status s = DecodeFrames(other, &m);
  EXPECT_NE(s.message().find("protocol version 2 is not supported"), std::string::npos) << s.message();
  uint8_t v = 0;
  EXPECT_TRUE(IsOtherVersion(other[0], &v));
  EXPECT_EQ(v, 2);

  Message hello;
  hello.cmd = Cmd::kHello;
  hello.worker_id = "w";
  hello.capacity = 0;
  EXPECT_NE(DecodeFrames(Encode(hello), &m).message().find("capacity"), std::string::npos);
  hello.capacity = 1;
  hello.worker_id = "";
  EXPECT_NE(DecodeFrames(Encode(hello), &m).message().find("worker_id empty"), std::string::npos);
  hello.worker_id = "bad\nid";
  EXPECT_NE(DecodeFrames(Encode(hello), &m).message().find("control"), std::string::npos);
  hello.worker_id = "w";
  hello.caps_json = "{not json";
  EXPECT_NE(DecodeFrames(Encode(hello), &m).message().find("not valid JSON"), std::string::npos);
  hello.caps_json = "{\"x\": 1850e479084}";  // nlohmann throws out_of_range here: found by the fuzzer
  EXPECT_TRUE(DecodeFrames(Encode(hello), &m).IsInvalidArgument());

  Message result;
  result.cmd = Cmd::kResult;
  for (std::string bad : {"../evil.png", "a/b.png", ".cmq-tmp.x", ""}) {
    result.files = {{bad, 1, std::string(64, 'a'), ""}};
    EXPECT_TRUE(DecodeFrames(Encode(result), &m).IsInvalidArgument()) << bad;
  }
  result.files = {{"ok.png", 1, "not-a-sha", ""}};
  EXPECT_TRUE(DecodeFrames(Encode(result), &m).IsInvalidArgument());

  Message chunk;
  chunk.cmd = Cmd::kChunk;
  chunk.file_name = "a.bin";
  chunk.file_size = 2;
  chunk.data = "abc";  // more than the file
  EXPECT_NE(DecodeFrames(Encode(chunk), &m).message().find("outside"), std::string::npos);
  chunk.file_size = 3;
  chunk.last = true;  // without a sha256
  EXPECT_TRUE(DecodeFrames(Encode(chunk), &m).IsInvalidArgument());

  // FETCH: a sha256 that could name a path, a window too large; INPUT: a chunk past its file's end.
  Message fetch;
  fetch.cmd = Cmd::kFetch;
  fetch.count = 1;
  for (std::string bad : {std::string("../../etc/passwd"), std::string(64, 'A'), std::string(63, 'a') + "/"}) {
    fetch.file_sha256 = bad;
    EXPECT_TRUE(DecodeFrames(Encode(fetch), &m).IsInvalidArgument()) << bad;
  }
  fetch.file_sha256 = std::string(64, 'a');
  for (uint32_t count : {0u, kChunkWindow + 1, 0xffffffffu}) {
    fetch.count = count;
    EXPECT_NE(DecodeFrames(Encode(fetch), &m).message().find("count"), std::string::npos) << count;
  }
  Message input;
  input.cmd = Cmd::kInput;
  input.file_sha256 = std::string(64, 'a');
  input.file_size = 2;
  input.data = "abc";
  EXPECT_NE(DecodeFrames(Encode(input), &m).message().find("outside"), std::string::npos);
  input.file_size = 3;
  input.offset = 0xffffffffffffffffull;
  EXPECT_NE(DecodeFrames(Encode(input), &m).message().find("outside"), std::string::npos);

  Message kept;
  kept.cmd = Cmd::kInputs;
  kept.inputs = {"../../etc/passwd"};
  EXPECT_TRUE(DecodeFrames(Encode(kept), &m).IsInvalidArgument());
  kept.inputs.assign(kMaxInputsHeld + 1, std::string(64, 'a'));
  EXPECT_NE(DecodeFrames(Encode(kept), &m).message().find("too many"), std::string::npos);

  // A huge count must not make the decoder allocate for it.
  Message held;
  held.cmd = Cmd::kWelcome;
  auto frames = Encode(held);
  frames[1] = std::string("\xe8\x03\0\0\x03\0\0\0\x01\0\0\0s\xff\xff\xff\x7f", 17);
  EXPECT_NE(DecodeFrames(frames, &m).message().find("count"), std::string::npos);
}

TEST(Capabilities, MatchingAndReasons) {
  Capabilities caps;
  ASSERT_TRUE(Capabilities::FromJson(
                  R"({"node_classes": ["CheckpointLoaderSimple", "KSampler", "LoraLoader"],
                      "combos": {"CheckpointLoaderSimple.ckpt_name": ["sd15.safetensors"],
                                 "KSampler.sampler_name": ["euler", "dpmpp_2m"],
                                 "LoraLoader.lora_name": []}})",
                  &caps)
                  .ok());
  auto req = [](const std::string& p) {
    Requirements r;
    EXPECT_TRUE(ExtractRequirements(p, &r).ok());
    return r;
  };
  Requirements ok = req(R"({"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
                            "3": {"class_type": "KSampler", "inputs": {"sampler_name": "euler", "seed": 5,
                                                                       "model": ["4", 0]}}})");
  EXPECT_TRUE(CanRun(caps, ok));
  EXPECT_TRUE(Mismatches(caps, ok).empty());
  Requirements bad = req(R"({"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
                             "5": {"class_type": "IPAdapterApply", "inputs": {}},
                             "6": {"class_type": "LoraLoader", "inputs": {"lora_name": "detail.safetensors"}}})");
  EXPECT_FALSE(CanRun(caps, bad));
  auto why = Mismatches(caps, bad, 5);
  ASSERT_EQ(why.size(), 3u);
  EXPECT_EQ(why[0], "no node class IPAdapterApply");
  EXPECT_EQ(why[1], "missing checkpoint sdxl.safetensors");
  EXPECT_EQ(why[2], "missing LoRA detail.safetensors");
  // Inputs that are not COMBOs on this worker are not checked; numbers compare as their JSON text.
  Capabilities numbers;
  ASSERT_TRUE(Capabilities::FromJson(R"({"node_classes": ["X"], "combos": {"X.size": [512, 768]}})", &numbers).ok());
  EXPECT_TRUE(CanRun(numbers, req(R"({"1": {"class_type": "X", "inputs": {"size": 768, "other": "free"}}})")));
  EXPECT_FALSE(CanRun(numbers, req(R"({"1": {"class_type": "X", "inputs": {"size": 1024}}})")));
  // Bad capability documents are refused with a reason.
  Capabilities c;
  EXPECT_TRUE(Capabilities::FromJson("[]", &c).IsInvalidArgument());
  EXPECT_TRUE(Capabilities::FromJson(R"({"combos": {"nodot": []}})", &c).IsInvalidArgument());
  EXPECT_TRUE(Capabilities::FromJson(R"({"node_classes": [1]})", &c).IsInvalidArgument());
}

// What ExtractRequirements must find, walking a parsed document (the reference for its streaming parser).
Requirements RequirementsFromDocument(const std::string& text) {
  using json = nlohmann::json;
  json j = json::parse(text);
  std::set<std::string> classes;
  std::set<std::tuple<std::string, std::string, std::string>> literals;
  for (auto node = j.begin(); node != j.end(); ++node) {
    const json& n = node.value();
    if (!n.is_object() || !n.contains("class_type") || !n["class_type"].is_string()) continue;
    const std::string cls = n["class_type"].get<std::string>();
    classes.insert(cls);
    if (!n.contains("inputs") || !n["inputs"].is_object()) continue;
    for (auto in = n["inputs"].begin(); in != n["inputs"].end(); ++in) {
      const json& v = in.value();
      if (v.is_string()) literals.emplace(cls, in.key(), v.get<std::string>());
      if (v.is_number() || v.is_boolean()) literals.emplace(cls, in.key(), v.dump());
    }
  }
  Requirements r;
  r.classes.assign(classes.begin(), classes.end());
  for (const auto& [c, i, v] : literals) r.literals.push_back({c, i, v});
  return r;
}

void ExpectSameRequirements(const std::string& prompt) {
  Requirements got;
  ASSERT_TRUE(ExtractRequirements(prompt, &got).ok()) << prompt;
  Requirements want = RequirementsFromDocument(prompt);
  EXPECT_EQ(got.classes, want.classes) << prompt;
  ASSERT_EQ(got.literals.size(), want.literals.size()) << prompt;
  for (size_t i = 0; i < got.literals.size(); ++i) {
    EXPECT_EQ(got.literals[i].cls, want.literals[i].cls) << prompt;
    EXPECT_EQ(got.literals[i].input, want.literals[i].input) << prompt;
    EXPECT_EQ(got.literals[i].value, want.literals[i].value) << prompt;
  }
}

TEST(Capabilities, RequirementsMatchAWalkOfTheParsedDocument) {
  // Every shape a node, its class_type and its inputs can take, including ones the document resolves
  // (a repeated key: the last one counts) and values that are not literals (links, lists, objects, null).
  const char* prompts[] = {
      R"({})",
      R"({"1": {"class_type": "A", "inputs": {"s": "x", "i": -3, "u": 18446744073709551615, "f": 1.50,
                "e": 2e3, "b": true, "n": null, "link": ["2", 0], "obj": {"deep": "y"}, "list": [1, "z"]}}})",
      R"({"1": {"inputs": {"v": "before"}, "class_type": "ClassAfterInputs", "_meta": {"title": "t"}}})",
      R"({"1": {"class_type": 5, "inputs": {"v": 1}}, "2": "not a node", "3": [1, 2], "4": null})",
      R"({"1": {"class_type": "A", "inputs": [1, 2]}, "2": {"class_type": "B", "inputs": "x"}})",
      R"({"1": {"class_type": "A", "class_type": "B", "inputs": {"v": 1}}})",
      R"({"1": {"class_type": "A", "class_type": null, "inputs": {"v": 1}}})",
      R"({"1": {"class_type": "A", "inputs": {"v": 1}, "inputs": {"w": 2}}})",
      R"({"1": {"class_type": "A", "inputs": {"v": 1, "v": ["3", 0]}}, "2": {"class_type": "A", "inputs": {"v": ["3", 0], "v": 7}}})",
      R"({"1": {"class_type": "A", "inputs": {"v": 1}, "inputs": null}})",
      R"({"1": {"class_type": "A", "inputs": {"k\u00e9y": "v\"al\u0000"}}, "1": {"class_type": "B", "inputs": {}}})",
      R"({"9": {"_meta": {"class_type": "Hidden", "inputs": {"x": 1}}, "class_type": "Shown", "inputs": {"nested": {"inputs": {"q": 1}}}}})",
  };
  for (const char* p : prompts) ExpectSameRequirements(p);
  for (uint64_t seed = 1; seed <= 20; ++seed) ExpectSameRequirements(bench::MakeApiPrompt(seed * 1500, seed));
  Requirements r;
  EXPECT_TRUE(ExtractRequirements("[]", &r).IsInvalidArgument());
  EXPECT_TRUE(ExtractRequirements("\"text\"", &r).IsInvalidArgument());
  EXPECT_TRUE(ExtractRequirements(R"({"1": {"class_type": "A")", &r).IsInvalidArgument());
  EXPECT_TRUE(ExtractRequirements(R"({"1": 1} trailing)", &r).IsInvalidArgument());
}

}  // namespace
}  // namespace comfymq::proto
