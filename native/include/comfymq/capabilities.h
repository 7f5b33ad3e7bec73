// Capability routing: what a worker's ComfyUI can run, what a job needs, and why a worker cannot run a job.
//
// Capabilities (sent by workers, JSON):
//   {"node_classes": ["KSampler", ...], "combos": {"CheckpointLoaderSimple.ckpt_name": ["sd15.safetensors", ...]}}
// Requirements (from a job's API-format prompt): every class_type, and every literal value given to an input
// (a value that is a link [node_id, index] is not a literal). A worker can run a job when it has every class,
// and every literal given to an input that is a COMBO on that worker is among that COMBO's choices.
// Values compare as text: strings as they are, numbers and booleans as their JSON text.
// Thread-compatible value types.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "comfymq/status.h"

namespace comfymq {

class Capabilities {
 public:
  static Status FromJson(std::string_view json, Capabilities* out);

  bool HasClass(const std::string& cls) const { return classes_.count(cls) != 0; }
  // The choices of cls.input when it is a COMBO here, else nullptr.
  const std::unordered_set<std::string>* Combo(const std::string& cls, const std::string& input) const;

  size_t node_classes() const { return classes_.size(); }
  size_t combo_inputs() const { return combos_.size(); }
  size_t combo_choices() const { return choices_; }
  // Distinct choices that name a model file (IsModelFileName): checkpoints, LoRAs, VAEs, ... this worker has.
  size_t model_files() const { return model_files_; }

 private:
  std::unordered_set<std::string> classes_;
  std::unordered_map<std::string, std::unordered_set<std::string>> combos_;  // "Class\x1finput" -> choices
  size_t choices_ = 0;
  size_t model_files_ = 0;
};

// A COMBO choice that names a model file: it ends in a model format's extension (.safetensors, .ckpt, .pt,
// .pth, .bin, .gguf, .sft, .onnx, .pkl, .pt2, .engine; any case).
bool IsModelFileName(std::string_view name);

struct Requirements {
  struct Literal {
    std::string cls, input, value;
  };
  std::vector<std::string> classes;  // unique
  std::vector<Literal> literals;     // unique
  // The stored inputs the prompt names ({"comfymq_input": "<sha256>", ...} node input values), unique, sorted.
  // Never a reason a worker cannot run it (inputs travel); a worker already holding them is preferred.
  std::vector<std::string> inputs;
  // The graph's shape: a hash of its sorted node classes (jobs of one shape take alike; for speed measures).
  uint64_t shape = 0;
};

Status ExtractRequirements(std::string_view prompt_json, Requirements* out);

bool CanRun(const Capabilities& caps, const Requirements& req);
// Empty when caps can run req; else up to `max` reasons, e.g. "missing checkpoint sdxl_base.safetensors",
// "no node class IPAdapterApply".
std::vector<std::string> Mismatches(const Capabilities& caps, const Requirements& req, size_t max = 3);

}  // namespace comfymq
