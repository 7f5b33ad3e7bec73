// Output references made stored forms when a job is sent (net/output_refs.h): by index and by file name, the file
// a job recorded; anything malformed, not waited for, or not recorded is refused naming the node and input.
#include "net/output_refs.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace comfymq::net {
namespace {

using json = nlohmann::json;

const uint64_t kDep = 0x01a2000000000001;
const std::string kSha(64, 'a'), kSha2(64, 'b');

const std::string kSha3(64, 'c');

Status Artifacts(uint64_t job, std::vector<Artifact>* out, std::string* outputs) {
  if (job != kDep) return Status::NotFound("no job");
  *out = {{FormatJobId(kDep) + "/a.png", 10, kSha, "image/png"},
          {FormatJobId(kDep) + "/b [output]", 20, kSha2, ""},
          {FormatJobId(kDep) + "/up/a.png", 30, kSha3, "image/png"},
          // never recorded by the broker; refused if they were
          {"../passwd", 1, kSha, ""},
          {"/etc/passwd", 1, kSha, ""},
          {FormatJobId(kDep) + "/../../shadow", 1, kSha, ""}};
  // node 9 saved a.png then up/a.png; node 12 showed text only
  *outputs = json{{"9",
                   {{"images",
                     {{{"filename", "a.png"}, {"subfolder", ""}, {"type", "output"}},
                      {{"filename", "a.png"}, {"subfolder", "up"}, {"type", "output"}}}}}},
                  {"12", {{"text", {"hello"}}}}}
                 .dump();
  return Status::OK();
}

std::string Prompt(const json& value) {
  return json{{"1", {{"class_type", "LoadImage"}, {"inputs", {{"image", value}, {"upload", "image"}}}}}}.dump();
}

Status Resolve(const std::string& prompt, std::vector<uint64_t> after, std::string* out,
               std::vector<UpstreamFile>* files) {
  return ResolveOutputRefs(prompt, after, Artifacts, out, files);
}

TEST(OutputRefs, ReferencesBecomeTheStoredFormOfTheRecordedFile) {
  std::string out;
  std::vector<UpstreamFile> files;
  const json by_index = {{"comfymq_output", {{"job", FormatJobId(kDep)}, {"index", 0}}}};
  ASSERT_TRUE(Resolve(Prompt(by_index), {kDep}, &out, &files).ok());
  EXPECT_EQ(json::parse(out)["1"]["inputs"]["image"], (json{{"comfymq_input", kSha}, {"name", "a.png"}, {"size", 10}}));
  EXPECT_EQ(json::parse(out)["1"]["inputs"]["upload"], "image");
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].path, FormatJobId(kDep) + "/a.png");
  // by file name; a name a loader would read from another folder travels under a neutral one
  const json by_name = {{"comfymq_output", {{"job", FormatJobId(kDep)}, {"filename", "b [output]"}}}};
  ASSERT_TRUE(Resolve(Prompt(by_name), {kDep}, &out, &files).ok());
  EXPECT_EQ(json::parse(out)["1"]["inputs"]["image"]["name"], "input-" + kSha2.substr(0, 12));
  // by output node: its files in the order it reported them, a subfolder told apart
  const json by_node = {{"comfymq_output", {{"job", FormatJobId(kDep)}, {"node", "9"}, {"index", 1}}}};
  ASSERT_TRUE(Resolve(Prompt(by_node), {kDep}, &out, &files).ok());
  EXPECT_EQ(json::parse(out)["1"]["inputs"]["image"]["comfymq_input"], kSha3);
  const json node_first = {{"comfymq_output", {{"job", FormatJobId(kDep)}, {"node", "9"}}}};
  ASSERT_TRUE(Resolve(Prompt(node_first), {kDep}, &out, &files).ok());
  EXPECT_EQ(json::parse(out)["1"]["inputs"]["image"]["comfymq_input"], kSha);
  // no reference (the key only as text): the prompt as it is
  const std::string text = Prompt("a photo of comfymq_output");
  ASSERT_TRUE(Resolve(text, {}, &out, &files).ok());
  EXPECT_EQ(out, text);
  EXPECT_TRUE(files.empty());
}

TEST(OutputRefs, WhatCannotBeResolvedIsRefusedNamingTheNodeAndInput) {
  std::string out;
  std::vector<UpstreamFile> files;
  auto refused = [&](const json& value, std::vector<uint64_t> after, const std::string& needle) {
    Status s = Resolve(Prompt(value), after, &out, &files);
    EXPECT_TRUE(s.IsInvalidArgument()) << value.dump() << ": " << s.ToString();
    EXPECT_NE(s.message().find("node 1 input 'image': "), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  const std::string dep = FormatJobId(kDep);
  refused({{"comfymq_output", {{"job", dep}, {"index", 0}}}}, {}, "which this job does not wait for");
  refused({{"comfymq_output", {{"job", dep}, {"index", 3}}}}, {kDep}, "made 3 output files, none at index 3");
  refused({{"comfymq_output", {{"job", dep}, {"node", "12"}}}}, {kDep}, "node 12 of job");
  refused({{"comfymq_output", {{"job", dep}, {"node", "9"}, {"index", 2}}}}, {kDep},
          "reported 2 files, none at index 2");
  refused({{"comfymq_output", {{"job", dep}, {"node", "9"}, {"filename", "a.png"}}}}, {kDep},
          "a comfymq_output reference is");
  refused({{"comfymq_output", {{"job", dep}, {"node", 9}}}}, {kDep}, "node is an output node's id");
  // paths out of the artifact root are no files: not by index, nor by name
  refused({{"comfymq_output", {{"job", dep}, {"filename", "passwd"}}}}, {kDep}, "no output file named passwd");
  refused({{"comfymq_output", {{"job", dep}, {"filename", "shadow"}}}}, {kDep}, "no output file named shadow");
  refused({{"comfymq_output", {{"job", dep}, {"index", -1}}}}, {kDep}, "whole number");
  refused({{"comfymq_output", {{"job", dep}, {"filename", "c.png"}}}}, {kDep}, "no output file named c.png");
  refused({{"comfymq_output", {{"job", dep}}}}, {kDep}, "a comfymq_output reference is");
  refused({{"comfymq_output", {{"job", dep}, {"index", 0}}}, {"x", 1}}, {kDep}, "a comfymq_output reference is");
  refused({{"comfymq_output", {{"job", "nope"}, {"index", 0}}}}, {kDep}, "a comfymq_output reference is");
  const uint64_t gone = kDep + 1;
  refused({{"comfymq_output", {{"job", FormatJobId(gone)}, {"index", 0}}}}, {kDep, gone}, "is gone");
}

}  // namespace
}  // namespace comfymq::net
