// CapabilitiesPool: the capabilities of the workers a broker knows, parsed once per distinct text and shared (a
// farm's workers mostly have the same models and nodes), and held to a budget: one worker's text may be at most
// `max_one` bytes, and the distinct sets alive at once at most `budget` bytes of text, so peers cannot grow the
// host's memory by sending large or varied capabilities.
//
// Thread safety: Intern is for one thread (the broker's loop); the sets it returns may be held and released on any
// thread (the budget is counted atomically as they go).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "comfymq/capabilities.h"
#include "comfymq/status.h"

namespace comfymq::net {

class CapabilitiesPool {
 public:
  CapabilitiesPool(size_t max_one, size_t budget) : max_one_(max_one), budget_(budget) {}

  // The capabilities `json` describes (an empty text: none), shared with every worker that sent the same text.
  // *take_class (optional) names the text: 64 bits of its SHA-256, never 0 (the store's TakeOptions::take_class:
  // workers that sent the same text run the same jobs). InvalidArgument when the text is bad or larger than
  // max_one; Busy when a new distinct set would exceed the budget (it frees as workers with other sets leave).
  Status Intern(const std::string& json, std::shared_ptr<const Capabilities>* out, uint64_t* take_class = nullptr);
  // Bytes of text of the distinct sets alive now.
  size_t live_bytes() const { return live_->load(); }

 private:
  const size_t max_one_, budget_;
  std::shared_ptr<std::atomic<size_t>> live_ = std::make_shared<std::atomic<size_t>>(0);
  std::map<std::string, std::weak_ptr<const Capabilities>> by_digest_;  // SHA-256 of the text -> the set
};

}  // namespace comfymq::net
