// Fair share between owners (Store::SetOwnerPolicies, Store::OwnerStats): the policies live in the JobTable's
// dispatch order (fair_queue.h); nothing here is written to disk.
#include "store/store_impl.h"

namespace comfymq {

Status StoreImpl::SetOwnerPolicies(const OwnerPolicy& fallback, const std::map<std::string, OwnerPolicy>& by_owner) {
  if (closed_.load()) return Status::IOError("store " + dir_ + " is closed");
  auto check = [](const std::string& who, const OwnerPolicy& p) {
    if (p.weight < 1 || p.weight > FairQueue::kMaxWeight) {
      return Status::InvalidArgument("weight of " + who + " must be between 1 and " +
                                     std::to_string(FairQueue::kMaxWeight) + ", got " + std::to_string(p.weight));
    }
    return Status::OK();
  };
  CMQ_RETURN_IF_ERROR(check("the default policy", fallback));
  for (const auto& [name, p] : by_owner) CMQ_RETURN_IF_ERROR(check("owner '" + name + "'", p));
  {
    std::unique_lock<std::shared_mutex> st(state_mu_);
    table_.SetOwnerPolicies(fallback, by_owner);
  }
  // A raised limit or a new weight may let waiting jobs go: dispatch looks again.
  StoreEvent e;
  e.kind = StoreEvent::Kind::kPoliciesChanged;
  e.reason = "owner policies changed";
  events_->Push({std::move(e)});
  return Status::OK();
}

Status StoreImpl::OwnerStats(std::vector<OwnerCounts>* owners) {
  if (closed_.load()) return Status::IOError("store " + dir_ + " is closed");
  owners->clear();
  std::shared_lock<std::shared_mutex> st(state_mu_);
  const auto& names = table_.owner_names();
  for (size_t i = 0; i < names.size(); ++i) {
    const auto owner = static_cast<uint16_t>(i);
    OwnerCounts c;
    c.pending = table_.OwnerPending(owner);
    c.running = table_.OwnerRunning(owner);
    if (c.pending == 0 && c.running == 0) continue;
    c.owner = names[i];
    c.policy = table_.PolicyOf(owner);
    c.at_running_limit = table_.AtRunningLimit(owner);
    owners->push_back(std::move(c));
  }
  return Status::OK();
}

}  // namespace comfymq
