#include "net/output_refs.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

namespace comfymq::net {
namespace {

using ojson = nlohmann::ordered_json;  // the prompt keeps its order

constexpr const char* kOutKey = "comfymq_output";

// The name the file travels with: the recorded file's own name when it is one safe path component (the worker
// checks the same rules: worker/inputs/references.py), else input-<sha256[:12]>.
std::string TravelName(const std::string& path, const std::string& sha256) {
  std::string name = path.substr(path.rfind('/') + 1);
  bool safe =
      !name.empty() && name != "." && name != ".." && name.size() <= 255 && name.find('\\') == std::string::npos;
  for (unsigned char c : name) safe &= c >= 0x20 && c != 0x7f;
  for (const char* a : {"[input]", "[output]", "[temp]"}) {
    const std::string s(a);
    safe &= !(name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0);
  }
  safe &= name.front() != ' ' && name.back() != ' ';
  return safe ? name : "input-" + sha256.substr(0, 12);
}

}  // namespace

Status ResolveOutputRefs(const std::string& prompt, const std::vector<uint64_t>& after, const ArtifactsOf& artifacts_of,
                         std::string* out, std::vector<UpstreamFile>* files) {
  files->clear();
  // (The host writes the key as it is. A reference in a job that waits for nothing is refused below too: such a
  // job cannot have been queued through the API, and must not reach a ComfyUI with the reference in it.)
  if (prompt.find(kOutKey) == std::string::npos) {
    *out = prompt;
    return Status::OK();
  }
  ojson graph = ojson::parse(prompt, nullptr, false);
  if (!graph.is_object()) return Status::InvalidArgument("the prompt is not a JSON object");
  std::map<uint64_t, std::vector<Artifact>> seen;
  bool changed = false;
  for (auto& [node_id, node] : graph.items()) {
    if (!node.is_object() || !node.contains("inputs") || !node["inputs"].is_object()) continue;
    for (auto& [input, value] : node["inputs"].items()) {
      if (!value.is_object() || !value.contains(kOutKey)) continue;
      const std::string where = "node " + node_id + " input '" + input + "': ";
      const ojson& spec = value[kOutKey];
      uint64_t job = 0;
      if (value.size() != 1 || !spec.is_object() || !spec.contains("job") || !spec["job"].is_string() ||
          !ParseJobId(spec["job"].get<std::string>(), &job) || (spec.contains("index") == spec.contains("filename"))) {
        return Status::InvalidArgument(where +
                                       "a comfymq_output reference is {\"job\": id, \"index\": N} or with "
                                       "\"filename\" instead of \"index\"");
      }
      if (!std::binary_search(after.begin(), after.end(), job)) {
        return Status::InvalidArgument(where + "names job " + FormatJobId(job) + ", which this job does not wait for");
      }
      auto it = seen.find(job);
      if (it == seen.end()) {
        std::vector<Artifact> a;
        Status s = artifacts_of(job, &a);
        if (s.IsNotFound()) return Status::InvalidArgument(where + "job " + FormatJobId(job) + " is gone");
        if (!s.ok()) return s;
        it = seen.emplace(job, std::move(a)).first;
      }
      const std::vector<Artifact>& arts = it->second;
      const Artifact* pick = nullptr;
      if (spec.contains("index")) {
        const ojson& index = spec["index"];
        if (!index.is_number_unsigned()) return Status::InvalidArgument(where + "index is a whole number from 0");
        const uint64_t i = index.get<uint64_t>();
        if (i >= arts.size()) {
          return Status::InvalidArgument(where + "job " + FormatJobId(job) + " made " + std::to_string(arts.size()) +
                                         " output files, none at index " + std::to_string(i));
        }
        pick = &arts[i];
      } else {
        if (!spec["filename"].is_string()) return Status::InvalidArgument(where + "filename is a file name");
        const std::string want = spec["filename"].get<std::string>();
        for (const Artifact& a : arts) {
          if (a.path.substr(a.path.rfind('/') + 1) == want) {
            pick = &a;
            break;
          }
        }
        if (pick == nullptr) {
          return Status::InvalidArgument(where + "job " + FormatJobId(job) + " made no output file named " +
                                         want.substr(0, 255));
        }
      }
      if (pick->sha256.size() != 64) {
        return Status::InvalidArgument(where + "job " + FormatJobId(job) + " recorded no checksum for " + pick->path);
      }
      value =
          ojson{{"comfymq_input", pick->sha256}, {"name", TravelName(pick->path, pick->sha256)}, {"size", pick->size}};
      files->push_back(UpstreamFile{pick->sha256, pick->path, pick->size});
      changed = true;
    }
  }
  *out = changed ? graph.dump(-1, ' ', false, ojson::error_handler_t::replace) : prompt;
  return Status::OK();
}

}  // namespace comfymq::net
