#include "store/doc_table.h"

#include <cinttypes>
#include <cstdio>
#include <cstdlib>

namespace comfymq {
namespace {

constexpr std::string_view kNotifyPrefix = "notify/";
constexpr std::string_view kOutboxPrefix = "outbox/";

}  // namespace

std::string DocTable::NotifyKey(uint64_t job_id) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "notify/%016" PRIx64, job_id);
  return buf;
}

std::string DocTable::OutboxKey(int64_t at_ms, uint64_t job_id) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "outbox/%013" PRId64 "-%016" PRIx64, at_ms < 0 ? int64_t{0} : at_ms, job_id);
  return buf;
}

const std::string* DocTable::Find(std::string_view key) const {
  auto it = docs_.find(key);
  return it == docs_.end() ? nullptr : &it->second;
}

std::optional<std::string> DocTable::Put(const std::string& key, std::string value) {
  auto it = docs_.find(key);
  std::optional<std::string> before;
  if (it != docs_.end()) {
    bytes_ -= it->second.size();
    before = std::move(it->second);
    bytes_ += value.size();
    it->second = std::move(value);
    return before;
  }
  bytes_ += key.size() + value.size();
  docs_.emplace(key, std::move(value));
  Track(key, true);
  return before;
}

std::optional<std::string> DocTable::Erase(const std::string& key) {
  auto it = docs_.find(key);
  if (it == docs_.end()) return std::nullopt;
  bytes_ -= it->first.size() + it->second.size();
  std::optional<std::string> before = std::move(it->second);
  docs_.erase(it);
  Track(key, false);
  return before;
}

void DocTable::List(std::string_view prefix, std::string_view after, size_t limit, bool keys_only,
                    std::vector<std::pair<std::string, std::string>>* out) const {
  auto it = after.empty() || after < prefix ? docs_.lower_bound(prefix) : docs_.upper_bound(after);
  for (; it != docs_.end() && out->size() < limit; ++it) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    out->emplace_back(it->first, keys_only ? std::string() : it->second);
  }
}

void DocTable::Clear() {
  docs_.clear();
  notify_.clear();
  outbox_ = 0;
  bytes_ = 0;
}

void DocTable::Track(const std::string& key, bool present) {
  if (key.compare(0, kOutboxPrefix.size(), kOutboxPrefix) == 0) {
    outbox_ = present ? outbox_ + 1 : outbox_ - 1;
    return;
  }
  if (key.size() != kNotifyPrefix.size() + 16 || key.compare(0, kNotifyPrefix.size(), kNotifyPrefix) != 0) return;
  char* end = nullptr;
  const uint64_t id = std::strtoull(key.c_str() + kNotifyPrefix.size(), &end, 16);
  if (end != key.c_str() + key.size()) return;
  if (present) {
    notify_.insert(id);
  } else {
    notify_.erase(id);
  }
}

}  // namespace comfymq
