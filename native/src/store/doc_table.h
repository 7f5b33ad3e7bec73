// DocTable: the store's documents, small named values kept beside the jobs (templates, the webhook outbox, ...),
// all in memory. Changed only through a Txn (which records the undo and the kDoc log record) or by recovery;
// written whole into every checkpoint, so a log segment never has to be kept for a document's sake.
//
// Two key families also mean something to the store itself (store.h, Store::PutDoc):
//   notify/<16 hex job id>             the job was enqueued with NewJob::notify: its endings go to the outbox
//                                      (value: the time of its last ending, "" before the first)
//   outbox/<13 digit ms>-<16 hex id>   a notify job reached a finished state at that time (value: JSON); a job's
//                                      endings have increasing times, so each has its own key
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace comfymq {

class DocTable {
 public:
  static std::string NotifyKey(uint64_t job_id);
  // The key of job `job_id`'s ending at `at_ms`: keys sort by time, then job.
  static std::string OutboxKey(int64_t at_ms, uint64_t job_id);

  const std::string* Find(std::string_view key) const;
  // Sets key to value; returns what it was before (nullopt: absent).
  std::optional<std::string> Put(const std::string& key, std::string value);
  // Removes key; returns what it was (nullopt: it was absent, nothing changed).
  std::optional<std::string> Erase(const std::string& key);
  // Keys (and values unless keys_only) starting with `prefix`, after `after` in byte order, at most `limit`.
  void List(std::string_view prefix, std::string_view after, size_t limit, bool keys_only,
            std::vector<std::pair<std::string, std::string>>* out) const;
  bool Notifies(uint64_t job_id) const { return notify_.count(job_id) != 0; }
  size_t outbox_size() const { return outbox_; }  // outbox/ keys

  const std::map<std::string, std::string, std::less<>>& all() const { return docs_; }
  size_t size() const { return docs_.size(); }
  uint64_t bytes() const { return bytes_; }  // keys and values together
  void Clear();

 private:
  void Track(const std::string& key, bool present);
  std::map<std::string, std::string, std::less<>> docs_;
  std::set<uint64_t> notify_;  // the job ids of notify/ keys
  size_t outbox_ = 0;
  uint64_t bytes_ = 0;
};

}  // namespace comfymq
