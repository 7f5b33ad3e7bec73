#include "net/capabilities_pool.h"

#include "util/sha256.h"

namespace comfymq::net {

Status CapabilitiesPool::Intern(const std::string& json, std::shared_ptr<const Capabilities>* out,
                                uint64_t* take_class) {
  if (json.size() > max_one_) {
    return Status::InvalidArgument("capabilities are too large (" + std::to_string(json.size()) + " bytes, at most " +
                                   std::to_string(max_one_) + ")");
  }
  const std::string digest = Sha256::Hex(json);
  if (take_class != nullptr) {
    *take_class = std::stoull(digest.substr(0, 16), nullptr, 16) | 1;  // (never 0: 0 is no class)
  }
  if (json.empty()) {
    static const auto kNone = std::make_shared<const Capabilities>();
    *out = kNone;
    return Status::OK();
  }
  auto it = by_digest_.find(digest);
  if (it != by_digest_.end()) {
    if (auto shared = it->second.lock()) {
      *out = std::move(shared);
      return Status::OK();
    }
    by_digest_.erase(it);
  }
  for (auto e = by_digest_.begin(); e != by_digest_.end();)
    e = e->second.expired() ? by_digest_.erase(e) : std::next(e);
  if (live_->load() + json.size() > budget_) {
    return Status::Busy("the host holds " + std::to_string(live_->load()) +
                        " bytes of distinct worker capabilities "
                        "(at most " +
                        std::to_string(budget_) + ")");
  }
  auto parsed = std::make_unique<Capabilities>();
  CMQ_RETURN_IF_ERROR(Capabilities::FromJson(json, parsed.get()));
  const size_t size = json.size();
  *live_ += size;
  std::shared_ptr<std::atomic<size_t>> live = live_;
  std::shared_ptr<const Capabilities> shared(parsed.release(), [live, size](const Capabilities* c) {
    *live -= size;
    delete c;
  });
  by_digest_[digest] = shared;
  *out = std::move(shared);
  return Status::OK();
}

}  // namespace comfymq::net
