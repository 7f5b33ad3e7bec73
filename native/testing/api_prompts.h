// Realistic API-format prompts for benchmarks: graphs of real ComfyUI node classes with their real input names,
// links between nodes, random seeds and numbers, model file names and text prompts drawn from a prompt
// vocabulary, as ComfyUI's "Save (API)" writes them. A repeated filler would flatter any store that compresses;
// these compress about as well as real workflows do (the enqueue bench prints the ratio it saw).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace comfymq::bench {

// A prompt of about `size` bytes (at least one node); different `seed`s give different graphs and values.
std::string MakeApiPrompt(size_t size, uint64_t seed);

// `n` distinct prompts of about `size` bytes, made before a timed loop so their making is not timed.
std::vector<std::string> MakeApiPromptPool(size_t n, size_t size, uint64_t seed);

}  // namespace comfymq::bench
