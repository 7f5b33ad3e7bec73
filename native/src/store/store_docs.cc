// Documents (Store::PutDoc and friends): small named values changed in commit groups like jobs (doc_table.h).
#include "store/store_impl.h"

namespace comfymq {
namespace {

bool StoreOwned(const std::string& key) { return key.rfind("notify/", 0) == 0 || key.rfind("outbox/", 0) == 0; }

Status CheckKey(const std::string& key) {
  if (key.empty() || key.size() > kMaxDocKeyBytes) {
    return Status::InvalidArgument("document key must be 1 to " + std::to_string(kMaxDocKeyBytes) + " bytes");
  }
  for (unsigned char c : key) {
    if (c < 0x20 || c == 0x7f) return Status::InvalidArgument("document key holds a control character");
  }
  return Status::OK();
}

}  // namespace

Status StoreImpl::PutDoc(const std::string& key, const std::string& value, bool only_if_absent) {
  CMQ_RETURN_IF_ERROR(CheckKey(key));
  if (StoreOwned(key)) return Status::InvalidArgument("document key " + key + ": notify/ and outbox/ are the store's");
  if (value.size() > kMaxDocValueBytes) {
    return Status::InvalidArgument("document " + key + " is too large (" + std::to_string(value.size()) +
                                   " bytes, at most " + std::to_string(kMaxDocValueBytes) + ")");
  }
  return Run(
      [&] {
        const std::string* old = docs_.Find(key);
        if (old != nullptr && only_if_absent) return Status::AlreadyExists("document " + key + " exists");
        const uint64_t grows =
            old == nullptr ? key.size() + value.size() : (value.size() > old->size() ? value.size() - old->size() : 0);
        if (docs_.bytes() + grows > options_.max_doc_bytes) {
          return Status::NoSpace("documents would hold more than " + std::to_string(options_.max_doc_bytes) +
                                 " bytes together");
        }
        if (old == nullptr && docs_.size() >= options_.max_docs) {
          return Status::NoSpace("the store holds " + std::to_string(options_.max_docs) + " documents, its limit");
        }
        txn_->PutDoc(key, value);
        return Status::OK();
      },
      key.size() + value.size() + 32);
}

Status StoreImpl::DeleteDoc(const std::string& key) {
  CMQ_RETURN_IF_ERROR(CheckKey(key));
  return Run(
      [&] {
        if (docs_.Find(key) == nullptr) return Status::NotFound("no document " + key);
        txn_->EraseDoc(key);
        return Status::OK();
      },
      key.size() + 32);
}

Status StoreImpl::GetDoc(const std::string& key, std::string* value) {
  CMQ_RETURN_IF_ERROR(Usable());
  std::shared_lock<std::shared_mutex> st(state_mu_);
  const std::string* v = docs_.Find(key);
  if (v == nullptr) return Status::NotFound("no document " + key);
  *value = *v;
  return Status::OK();
}

Status StoreImpl::ListDocs(const std::string& prefix, const std::string& after, size_t limit, bool keys_only,
                           std::vector<std::pair<std::string, std::string>>* out) {
  CMQ_RETURN_IF_ERROR(Usable());
  out->clear();
  std::shared_lock<std::shared_mutex> st(state_mu_);
  docs_.List(prefix, after, limit, keys_only, out);
  return Status::OK();
}

}  // namespace comfymq
