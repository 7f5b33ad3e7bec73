#include "comfymq/capabilities.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "util/checksum.h"

namespace comfymq {
namespace {

bool IsInputSha(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

using json = nlohmann::json;

std::string ComboKey(const std::string& cls, const std::string& input) { return cls + '\x1f' + input; }

// Values compare as text: strings as they are, other scalars as JSON.
bool ScalarText(const json& v, std::string* out) {
  if (v.is_string()) {
    *out = v.get<std::string>();
    return true;
  }
  if (v.is_number() || v.is_boolean()) {
    *out = v.dump();
    return true;
  }
  return false;
}

// A friendly name for what a COMBO input selects, from ComfyUI's naming conventions.
std::string WhatIs(const std::string& input) {
  static const std::pair<const char*, const char*> kNames[] = {
      {"ckpt_name", "checkpoint"},
      {"lora_name", "LoRA"},
      {"vae_name", "VAE"},
      {"unet_name", "diffusion model"},
      {"clip_name", "CLIP model"},
      {"clip_name1", "CLIP model"},
      {"clip_name2", "CLIP model"},
      {"control_net_name", "ControlNet"},
      {"model_name", "model"},
      {"upscale_model", "upscale model"},
      {"style_model_name", "style model"},
      {"gligen_name", "GLIGEN model"},
      {"image", "input image"},
      {"audio", "input audio"},
      {"video", "input video"},
  };
  for (const auto& [k, v] : kNames) {
    if (input == k) return v;
  }
  return "";
}

}  // namespace

Status Capabilities::FromJson(std::string_view text, Capabilities* out) {
  *out = Capabilities();
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::exception&) {
    return Status::InvalidArgument("capabilities are not valid JSON");
  }
  if (!j.is_object()) return Status::InvalidArgument("capabilities must be a JSON object");
  auto classes = j.find("node_classes");
  if (classes != j.end()) {
    if (!classes->is_array()) return Status::InvalidArgument("capabilities.node_classes must be a list");
    for (const json& c : *classes) {
      if (!c.is_string()) return Status::InvalidArgument("capabilities.node_classes must hold strings");
      out->classes_.insert(c.get<std::string>());
    }
  }
  std::unordered_set<std::string> model_files;  // one file offered by several loaders counts once
  auto combos = j.find("combos");
  if (combos != j.end()) {
    if (!combos->is_object()) return Status::InvalidArgument("capabilities.combos must be an object");
    for (auto it = combos->begin(); it != combos->end(); ++it) {
      const std::string& key = it.key();
      size_t dot = key.find('.');
      if (dot == std::string::npos || dot == 0 || dot + 1 == key.size()) {
        return Status::InvalidArgument("capabilities.combos keys are 'Class.input', got '" + key + "'");
      }
      if (!it.value().is_array()) return Status::InvalidArgument("capabilities.combos." + key + " must be a list");
      auto& set = out->combos_[ComboKey(key.substr(0, dot), key.substr(dot + 1))];
      for (const json& v : it.value()) {
        std::string t;
        if (ScalarText(v, &t)) {
          if (v.is_string() && IsModelFileName(t)) model_files.insert(t);
          set.insert(std::move(t));
          out->choices_++;
        }
      }
    }
  }
  out->model_files_ = model_files.size();
  return Status::OK();
}

bool IsModelFileName(std::string_view name) {
  static const char* const kExtensions[] = {".safetensors", ".ckpt", ".pt",  ".pth", ".bin",   ".gguf",
                                            ".sft",         ".onnx", ".pkl", ".pt2", ".engine"};
  const size_t dot = name.rfind('.');
  if (dot == std::string_view::npos || dot == 0) return false;
  std::string ext(name.substr(dot));
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* e : kExtensions) {
    if (ext == e) return true;
  }
  return false;
}

const std::unordered_set<std::string>* Capabilities::Combo(const std::string& cls, const std::string& input) const {
  auto it = combos_.find(ComboKey(cls, input));
  return it == combos_.end() ? nullptr : &it->second;
}

namespace {

// Collects requirements while nlohmann's SAX parser walks the prompt: no document is built (this runs for
// every job a worker might take). Same result as walking the parsed document: for duplicate keys the last
// one counts, as it would in the document.
class RequirementsSax final : public nlohmann::json_sax<json> {
 public:
  explicit RequirementsSax(Requirements* out) : out_(out) {}

  bool null() override { return NoText(); }
  bool boolean(bool v) override { return Text(v ? "true" : "false", false); }
  bool number_integer(number_integer_t v) override { return Text(std::to_string(v), false); }
  bool number_unsigned(number_unsigned_t v) override { return Text(std::to_string(v), false); }
  bool number_float(number_float_t v, const string_t&) override { return Text(json(v).dump(), false); }
  bool string(string_t& v) override { return Text(std::move(v), true); }
  bool binary(binary_t&) override { return NoText(); }
  bool start_object(std::size_t) override { return Open(true); }
  bool start_array(std::size_t) override { return Open(false); }
  bool end_object() override { return Close(); }
  bool end_array() override { return Close(); }
  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

  bool top_is_object() const { return top_is_object_; }
  void Finish() {
    std::set<std::string> classes;
    std::set<std::tuple<std::string, std::string, std::string>> literals;
    std::set<std::string> refs;
    for (const auto& [id, node] : nodes_) {
      classes.insert(node.cls);
      for (const auto& [input, value] : node.inputs) literals.emplace(node.cls, input, value);
      for (const auto& [input, sha] : node.refs) {
        if (IsInputSha(sha)) refs.insert(sha);
      }
    }
    out_->inputs.assign(refs.begin(), refs.end());
    out_->classes.assign(classes.begin(), classes.end());
    for (const auto& [c, i, v] : literals) out_->literals.push_back({c, i, v});
  }

 private:
  // Depth 1 is inside the graph, 2 inside a node, 3 inside a node's inputs (when that value is an object).
  bool Open(bool object) {
    const int d = depth_++;
    if (d == 0) {
      top_is_object_ = object;
    } else if (d == 1) {  // a node
      node_id_ = key_;
      node_ok_ = object;
      has_class_ = false;
      cls_.clear();
      inputs_.clear();
      refs_.clear();
      in_inputs_ = false;
    } else if (d == 2 && node_ok_) {
      if (key_ == "class_type") has_class_ = false;  // not a string
      if (key_ == "inputs") {
        inputs_.clear();
        refs_.clear();
        in_inputs_ = object;
      }
    } else if (d == 3 && in_inputs_) {
      inputs_.erase(key_);  // a link or a list is not a literal (and replaces an earlier same-named input)
      refs_.erase(key_);
      ref_input_ = object ? key_ : std::string();  // an object may be a stored input's reference
    }
    return true;
  }
  bool Close() {
    const int d = --depth_;
    if (d == 3) ref_input_.clear();
    if (d == 2) in_inputs_ = false;  // the node's inputs (or another member) ended
    if (d == 1) {                    // a node ended; a later node with the same id replaces it
      if (node_ok_ && has_class_) {
        nodes_[node_id_] = Node{std::move(cls_), std::move(inputs_), std::move(refs_)};
      } else {
        nodes_.erase(node_id_);
      }
    }
    return true;
  }
  // A scalar at the current place: the graph's node values are only looked at when they are objects.
  bool Text(std::string text, bool is_string) {
    if (depth_ == 1) {
      nodes_.erase(key_);  // not a node
    } else if (depth_ == 2 && node_ok_) {
      if (key_ == "class_type") {
        has_class_ = is_string;
        if (is_string) cls_ = std::move(text);
      } else if (key_ == "inputs") {
        inputs_.clear();
        in_inputs_ = false;
      }
    } else if (depth_ == 3 && in_inputs_) {
      refs_.erase(key_);
      inputs_[key_] = std::move(text);
    } else if (depth_ == 4 && in_inputs_ && !ref_input_.empty() && key_ == "comfymq_input" && is_string) {
      refs_[ref_input_] = std::move(text);
    }
    return true;
  }
  bool NoText() {  // null: never compared
    if (depth_ == 1) {
      nodes_.erase(key_);
    } else if (depth_ == 2 && node_ok_) {
      if (key_ == "class_type") has_class_ = false;
      if (key_ == "inputs") {
        inputs_.clear();
        in_inputs_ = false;
      }
    } else if (depth_ == 3 && in_inputs_) {
      inputs_.erase(key_);
    }
    return true;
  }

  Requirements* out_;
  int depth_ = 0;
  bool top_is_object_ = false;
  bool node_ok_ = false, has_class_ = false, in_inputs_ = false;
  struct Node {
    std::string cls;
    std::map<std::string, std::string> inputs;  // literal inputs
    std::map<std::string, std::string> refs;    // input -> the stored input's sha256 it names
  };
  std::string key_, node_id_, cls_;
  std::string ref_input_;                      // inside this input's object value (depth 4)
  std::map<std::string, std::string> inputs_;  // the current node's literal inputs
  std::map<std::string, std::string> refs_;    // the current node's stored-input references
  std::map<std::string, Node> nodes_;          // by node id
};

}  // namespace

Status ExtractRequirements(std::string_view prompt_json, Requirements* out) {
  *out = Requirements();
  RequirementsSax sax(out);
  if (!json::sax_parse(prompt_json.begin(), prompt_json.end(), &sax)) {
    return Status::InvalidArgument("prompt is not valid JSON");
  }
  if (!sax.top_is_object()) return Status::InvalidArgument("prompt must be a JSON object");
  sax.Finish();
  std::vector<std::string> classes = out->classes;
  std::sort(classes.begin(), classes.end());
  std::string joined;
  for (const std::string& c : classes) joined.append(c).push_back('\n');
  out->shape = Hash64(joined);
  return Status::OK();
}

bool CanRun(const Capabilities& caps, const Requirements& req) {
  for (const std::string& c : req.classes) {
    if (!caps.HasClass(c)) return false;
  }
  for (const auto& l : req.literals) {
    const auto* choices = caps.Combo(l.cls, l.input);
    if (choices != nullptr && choices->count(l.value) == 0) return false;
  }
  return true;
}

std::vector<std::string> Mismatches(const Capabilities& caps, const Requirements& req, size_t max) {
  std::vector<std::string> out;
  for (const std::string& c : req.classes) {
    if (out.size() >= max) return out;
    if (!caps.HasClass(c)) out.push_back("no node class " + c);
  }
  for (const auto& l : req.literals) {
    if (out.size() >= max) return out;
    const auto* choices = caps.Combo(l.cls, l.input);
    if (choices == nullptr || choices->count(l.value) != 0) continue;
    const std::string what = WhatIs(l.input);
    out.push_back(what.empty() ? "missing " + l.cls + "." + l.input + " value " + l.value
                               : "missing " + what + " " + l.value);
  }
  return out;
}

}  // namespace comfymq
