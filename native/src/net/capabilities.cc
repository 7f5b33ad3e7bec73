#include "comfymq/capabilities.h"

#include <nlohmann/json.hpp>
#include <set>

namespace comfymq {
namespace {

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
      {"ckpt_name", "checkpoint"},        {"lora_name", "LoRA"},         {"vae_name", "VAE"},
      {"unet_name", "diffusion model"},   {"clip_name", "CLIP model"},   {"clip_name1", "CLIP model"},
      {"clip_name2", "CLIP model"},       {"control_net_name", "ControlNet"}, {"model_name", "model"},
      {"upscale_model", "upscale model"}, {"style_model_name", "style model"}, {"gligen_name", "GLIGEN model"},
      {"image", "input image"},           {"audio", "input audio"},    {"video", "input video"},
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
          set.insert(std::move(t));
          out->choices_++;
        }
      }
    }
  }
  return Status::OK();
}

const std::unordered_set<std::string>* Capabilities::Combo(const std::string& cls, const std::string& input) const {
  auto it = combos_.find(ComboKey(cls, input));
  return it == combos_.end() ? nullptr : &it->second;
}

Status ExtractRequirements(std::string_view prompt_json, Requirements* out) {
  *out = Requirements();
  json j;
  try {
    j = json::parse(prompt_json.begin(), prompt_json.end());
  } catch (const json::exception&) {
    return Status::InvalidArgument("prompt is not valid JSON");
  }
  if (!j.is_object()) return Status::InvalidArgument("prompt must be a JSON object");
  std::set<std::string> classes;
  std::set<std::tuple<std::string, std::string, std::string>> literals;
  for (auto node = j.begin(); node != j.end(); ++node) {
    const json& n = node.value();
    if (!n.is_object()) continue;
    auto ct = n.find("class_type");
    if (ct == n.end() || !ct->is_string()) continue;
    const std::string cls = ct->get<std::string>();
    classes.insert(cls);
    auto inputs = n.find("inputs");
    if (inputs == n.end() || !inputs->is_object()) continue;
    for (auto in = inputs->begin(); in != inputs->end(); ++in) {
      std::string value;
      if (ScalarText(in.value(), &value)) literals.emplace(cls, in.key(), std::move(value));
    }
  }
  out->classes.assign(classes.begin(), classes.end());
  for (const auto& [c, i, v] : literals) out->literals.push_back({c, i, v});
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
    out.push_back(what.empty() ? "missing " + l.cls + "." + l.input + " value " + l.value : "missing " + what + " " + l.value);
  }
  return out;
}

}  // namespace comfymq
