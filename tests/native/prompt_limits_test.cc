// The limits every prompt and stored JSON value keeps, however it arrives: nesting at most kMaxJsonDepth deep
// (a deeper prompt once wedged workers: Python's json module could not read it back), no control characters in
// node ids or class_type. Checked by both the fast scanner and the full checker, by the store at enqueue (as a
// string or an object, one job or many), and on the wire.
#include <gtest/gtest.h>

#include <string>

#include "comfymq/job.h"
#include "comfymq/store.h"
#include "net/protocol.h"
#include "test_util.h"
#include "testing/mem_env.h"
#include "util/json_checks.h"
#include "util/prompt_scan.h"

namespace comfymq {
namespace {

using ::comfymq::testing::PromptFor;
using ::comfymq::testing::SmallOptions;

// An input value nested `levels` deep inside the graph (1), the node (2) and its inputs (3).
std::string PromptNested(int levels, char open = '[') {
  const char close = open == '[' ? ']' : '}';
  std::string v;
  for (int i = 0; i < levels; ++i) v += open == '[' ? "[" : "{\"k\": ";
  v += "1";
  for (int i = 0; i < levels; ++i) v += close;
  return R"({"1": {"class_type": "K", "inputs": {"x": )" + v + "}}}";
}

std::string ValueNested(int levels) { return std::string(levels, '[') + std::string(levels, ']'); }

TEST(PromptLimits, NestingUpToTheLimitIsAcceptedAndOneLevelMoreIsRefusedNamingIt) {
  const int inside = kMaxJsonDepth - 3;  // levels left inside the inputs object
  for (char open : {'[', '{'}) {
    const std::string at_limit = PromptNested(inside, open), over = PromptNested(inside + 1, open);
    EXPECT_TRUE(FastPromptAccepts(at_limit)) << open;
    EXPECT_TRUE(CheckPromptJsonFully(at_limit).ok()) << open;
    EXPECT_FALSE(FastPromptAccepts(over)) << open;
    Status s = ValidatePromptJson(over);
    ASSERT_TRUE(s.IsInvalidArgument()) << open;
    EXPECT_NE(s.message().find("nests deeper than " + std::to_string(kMaxJsonDepth)), std::string::npos) << s.message();
  }
  // The prompt that wedged a worker: 10,000 brackets.
  Status s = ValidatePromptJson(PromptNested(10000));
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find(std::to_string(kMaxJsonDepth)), std::string::npos);
  // Any JSON value the store keeps (workflows, outputs, errors, progress).
  EXPECT_TRUE(ValidateJsonValue(ValueNested(kMaxJsonDepth), "progress").ok());
  EXPECT_TRUE(FastJsonAccepts(ValueNested(kMaxJsonDepth)));
  EXPECT_FALSE(FastJsonAccepts(ValueNested(kMaxJsonDepth + 1)));
  s = ValidateJsonValue(ValueNested(kMaxJsonDepth + 1), "progress");
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("progress nests deeper"), std::string::npos) << s.message();
  s = ValidateJsonObject("{\"a\": " + ValueNested(5000) + "}", "workflow");
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("workflow nests deeper"), std::string::npos) << s.message();
  // Brackets inside strings are text, not nesting.
  EXPECT_TRUE(ValidateJsonValue("[\"" + std::string(500, '[') + "\\\"[\"]", "v").ok());
  EXPECT_TRUE(JsonSyntaxAccepts(ValueNested(10000))) << "the wire takes any valid JSON for a job";
}

TEST(PromptLimits, ControlCharactersInNodeIdsAndClassTypesAreRefusedNamingTheNode) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"a\nb": {"class_type": "K", "inputs": {}}})", "node id 'a\\u000ab'"},
      {R"({"a\u0001": {"class_type": "K", "inputs": {}}})", "node id 'a\\u0001'"},
      {"{\"a\x7f\": {\"class_type\": \"K\", \"inputs\": {}}}", "node id 'a\\u007f'"},
      {R"({"5": {"class_type": "Load\tImage", "inputs": {}}})", "node '5': class_type 'Load\\u0009Image'"},
      {R"({"5": {"class_type": "K\u0000", "inputs": {}}})", "node '5': class_type"},
      {"{\"5\": {\"class_type\": \"K\x7f\", \"inputs\": {}}}", "node '5': class_type"},
      {"{\"5\": {\"class_type\": \"K\xc2\x85\", \"inputs\": {}}}", "node '5': class_type"},  // U+0085
      {R"({"5": {"class_type": "K\u2028", "inputs": {}}})", "node '5': class_type"},
      {"{\"a\xe2\x80\xa9\": {\"class_type\": \"K\", \"inputs\": {}}}", "node id 'a"},  // U+2029
  };
  for (const auto& [prompt, named] : cases) {
    EXPECT_FALSE(FastPromptAccepts(prompt)) << prompt;
    Status s = ValidatePromptJson(prompt);
    ASSERT_TRUE(s.IsInvalidArgument()) << prompt;
    EXPECT_NE(s.message().find(named), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("control character"), std::string::npos) << s.message();
  }
  EXPECT_TRUE(ValidatePromptJson("{\"5\": {\"class_type\": \"Über \xe2\x80\x94 Node\", \"inputs\": {}}}").ok());
  // Control characters in input values are the user's business (a prompt's text has newlines).
  EXPECT_TRUE(ValidatePromptJson(R"({"5": {"class_type": "K", "inputs": {"text": "a\nb\u0001"}}})").ok());
  EXPECT_TRUE(ValidatePromptJson(R"({"é 日本": {"class_type": "Über", "inputs": {}}})").ok());
}

TEST(PromptLimits, TheStoreRefusesTooDeepJsonHoweverItArrivesAndChangesNothing) {
  MemEnv env;
  std::unique_ptr<Store> store;
  ASSERT_TRUE(Store::Open(SmallOptions(&env), "/db", &store).ok());
  NewJob deep;
  deep.prompt = PromptNested(10000);
  EnqueueResult r;
  Status s = store->Enqueue(deep, &r);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find(std::to_string(kMaxJsonDepth)), std::string::npos) << s.message();
  NewJob good;
  good.prompt = PromptFor(1);
  std::vector<EnqueueResult> rs;
  EXPECT_TRUE(store->EnqueueMany({good, deep}, &rs).IsInvalidArgument()) << "a batch is all or none";
  NewJob deep_workflow = good;
  deep_workflow.workflow = "{\"w\": " + ValueNested(200) + "}";
  EXPECT_TRUE(store->Enqueue(deep_workflow, &r).IsInvalidArgument());
  StoreStats st;
  ASSERT_TRUE(store->Stats(&st).ok());
  EXPECT_EQ(st.total, 0u);
  // What a worker sends back is held to the same limit.
  ASSERT_TRUE(store->Enqueue(good, &r).ok());
  TakeOptions o;
  o.worker_id = "w";
  std::unique_ptr<Lease> l;
  ASSERT_TRUE(store->Take(o, &l).ok());
  ASSERT_TRUE(l);
  EXPECT_TRUE(store->Complete(l->job_id, l->token, "{\"9\": " + ValueNested(100) + "}", {}).IsInvalidArgument());
  EXPECT_TRUE(store->Progress(l->job_id, l->token, ValueNested(100)).IsInvalidArgument());
  JobError e;
  e.type = "x";
  e.details = ValueNested(100);
  EXPECT_TRUE(store->Fail(l->job_id, l->token, e, true).IsInvalidArgument());
  Job j;
  ASSERT_TRUE(store->Get(l->job_id, false, &j).ok());
  EXPECT_EQ(j.state, JobState::kRunning);
}

TEST(PromptLimits, OnTheWireAJobMayNestAnyDepthButWhatAWorkerSendsMayNot) {
  proto::Message job;
  job.cmd = proto::Cmd::kJob;
  job.job_id = 1;
  job.token = 2;
  job.prompt_json = PromptNested(10000);
  job.workflow_json = ValueNested(10000);
  proto::Message got;
  std::vector<std::string> frames = proto::Encode(job);
  std::vector<std::string_view> views(frames.begin(), frames.end());
  ASSERT_TRUE(proto::Decode(views, &got).ok()) << "the worker must get it, to refuse it by name";
  for (proto::Cmd cmd : {proto::Cmd::kProgress, proto::Cmd::kResult, proto::Cmd::kFail}) {
    proto::Message m;
    m.cmd = cmd;
    m.job_id = 1;
    m.token = 2;
    m.json =
        cmd == proto::Cmd::kProgress ? ValueNested(kMaxJsonDepth + 1) : "{\"a\": " + ValueNested(kMaxJsonDepth) + "}";
    frames = proto::Encode(m);
    views.assign(frames.begin(), frames.end());
    Status s = proto::Decode(views, &got);
    EXPECT_TRUE(s.IsInvalidArgument()) << proto::CmdName(cmd);
    EXPECT_NE(s.message().find("too deep"), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace comfymq
