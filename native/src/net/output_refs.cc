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
  std::string name = path.substr(path.rfind('/') + 1);  // (BaseName)
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

std::string BaseName(const std::string& path) { return path.substr(path.rfind('/') + 1); }

// The files output node `node` reported, in order: every {"filename", "subfolder"?} in the lists of its outputs
// (ComfyUI's "images", "gifs", "audio", ...), as "subfolder/filename" or "filename".
std::vector<std::string> NodeFiles(const std::string& outputs, const std::string& node) {
  std::vector<std::string> files;
  ojson all = ojson::parse(outputs.empty() ? "{}" : outputs, nullptr, false);
  if (!all.is_object() || !all.contains(node) || !all[node].is_object()) return files;
  for (const auto& [key, list] : all[node].items()) {
    if (!list.is_array()) continue;
    for (const ojson& f : list) {
      if (!f.is_object() || !f.contains("filename") || !f["filename"].is_string()) continue;
      const std::string sub =
          f.contains("subfolder") && f["subfolder"].is_string() ? f["subfolder"].get<std::string>() : "";
      files.push_back(sub.empty() ? f["filename"].get<std::string>() : sub + "/" + f["filename"].get<std::string>());
    }
  }
  return files;
}

struct Recorded {
  std::vector<Artifact> artifacts;
  std::string outputs;
};

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
  std::map<uint64_t, Recorded> seen;
  bool changed = false;
  for (auto& [node_id, node] : graph.items()) {
    if (!node.is_object() || !node.contains("inputs") || !node["inputs"].is_object()) continue;
    for (auto& [input, value] : node["inputs"].items()) {
      if (!value.is_object() || !value.contains(kOutKey)) continue;
      const std::string where = "node " + node_id + " input '" + input + "': ";
      const ojson& spec = value[kOutKey];
      uint64_t job = 0;
      bool well_formed = value.size() == 1 && spec.is_object();
      if (well_formed) {
        for (const auto& [k, v] : spec.items()) {
          well_formed &= k == "job" || k == "index" || k == "filename" || k == "node";
        }
        const bool f = spec.contains("filename"), n = spec.contains("node"), i = spec.contains("index");
        // one of: index; filename; node with an optional index
        well_formed &= !(f && n) && !(f && i) && (f || n || i);
        well_formed &=
            spec.contains("job") && spec["job"].is_string() && ParseJobId(spec["job"].get<std::string>(), &job);
      }
      if (!well_formed) {
        return Status::InvalidArgument(where +
                                       "a comfymq_output reference is {\"job\": id, \"index\": N}, or with "
                                       "\"filename\" or \"node\" (and an optional \"index\") instead");
      }
      if (!std::binary_search(after.begin(), after.end(), job)) {
        return Status::InvalidArgument(where + "names job " + FormatJobId(job) + ", which this job does not wait for");
      }
      auto it = seen.find(job);
      if (it == seen.end()) {
        Recorded r;
        Status s = artifacts_of(job, &r.artifacts, &r.outputs);
        if (s.IsNotFound()) return Status::InvalidArgument(where + "job " + FormatJobId(job) + " is gone");
        if (!s.ok()) return s;
        it = seen.emplace(job, std::move(r)).first;
      }
      std::vector<Artifact>& arts = it->second.artifacts;
      // Only a file under the artifact root is one (the broker records nothing else): a recorded path that is
      // absolute, or leads out with "..", counts as no file.
      arts.erase(std::remove_if(arts.begin(), arts.end(),
                                [](const Artifact& a) {
                                  return a.path.empty() || a.path[0] == '/' || a.path.find('\\') != std::string::npos ||
                                         ("/" + a.path + "/").find("/../") != std::string::npos;
                                }),
                 arts.end());
      uint64_t index = 0;
      if (spec.contains("index")) {
        if (!spec["index"].is_number_unsigned())
          return Status::InvalidArgument(where + "index is a whole number from 0");
        index = spec["index"].get<uint64_t>();
      }
      const Artifact* pick = nullptr;
      std::string want;  // a file name (or subfolder/name) to find among the artifacts
      if (spec.contains("node")) {
        if (!spec["node"].is_string()) return Status::InvalidArgument(where + "node is an output node's id");
        const std::string node = spec["node"].get<std::string>();
        const std::vector<std::string> files = NodeFiles(it->second.outputs, node);
        if (index >= files.size()) {
          return Status::InvalidArgument(where + "node " + node.substr(0, 64) + " of job " + FormatJobId(job) +
                                         " reported " + std::to_string(files.size()) + " files, none at index " +
                                         std::to_string(index));
        }
        want = files[index];
      } else if (spec.contains("filename")) {
        if (!spec["filename"].is_string()) return Status::InvalidArgument(where + "filename is a file name");
        want = spec["filename"].get<std::string>();
      } else {
        if (index >= arts.size()) {
          return Status::InvalidArgument(where + "job " + FormatJobId(job) + " made " + std::to_string(arts.size()) +
                                         " output files, none at index " + std::to_string(index));
        }
        pick = &arts[index];
      }
      if (pick == nullptr) {
        const std::string name = BaseName(want);
        for (const Artifact& a : arts) {  // the same name; with a subfolder, the one under it if there is one
          if (BaseName(a.path) != name) continue;
          const bool under =
              a.path.size() >= want.size() && a.path.compare(a.path.size() - want.size(), want.size(), want) == 0;
          if (pick == nullptr || under) pick = &a;
          if (under) break;
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
