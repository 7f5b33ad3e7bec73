#include "store/txn.h"

#include <algorithm>
#include <cassert>
#include <cstdlib>

#include "store/records.h"

namespace comfymq {

void Txn::Insert(const JobMeta& m) {
  table_->Insert(m);
  Undo u;
  u.kind = Undo::Kind::kInserted;
  u.id = m.id;
  undo_.push_back(std::move(u));
}

void Txn::Replace(const JobMeta& m) {
  const JobMeta* old = table_->Find(m.id);
  assert(old != nullptr);
  Undo u;
  u.kind = Undo::Kind::kReplaced;
  u.id = m.id;
  u.before = *old;
  const bool ends = !IsFinished(old->state) && IsFinished(m.state) && docs_->Notifies(m.id);
  table_->Replace(m);
  undo_.push_back(std::move(u));
  if (ends) {
    // Each ending of a job its own key: after the job's last ending (kept as its notify/ document's value), even
    // within one millisecond or with the clock set back.
    const std::string notify_key = DocTable::NotifyKey(m.id);
    const std::string* last = docs_->Find(notify_key);
    int64_t at = m.updated_ms;
    if (last != nullptr && !last->empty()) at = std::max<int64_t>(at, std::strtoll(last->c_str(), nullptr, 10) + 1);
    PutDoc(notify_key, std::to_string(at));
    PutDoc(DocTable::OutboxKey(at, m.id), std::string("{\"job\":\"") + FormatJobId(m.id) + "\",\"state\":\"" +
                                              JobStateName(m.state) + "\",\"at\":" + std::to_string(at) + "}");
  }
}

void Txn::Erase(uint64_t id) {
  const JobMeta* old = table_->Find(id);
  assert(old != nullptr);
  Undo u;
  u.kind = Undo::Kind::kErased;
  u.id = id;
  u.before = *old;
  table_->Erase(id);
  undo_.push_back(std::move(u));
  if (docs_->Notifies(id)) EraseDoc(DocTable::NotifyKey(id));
}

void Txn::PutDoc(const std::string& key, std::string value) {
  std::string payload;
  records::EncodeDoc(key, value, false, &payload);
  Append(log::RecordType::kDoc, payload);
  Undo u;
  u.kind = Undo::Kind::kDoc;
  u.doc_key = key;
  u.doc_before = docs_->Put(key, std::move(value));
  undo_.push_back(std::move(u));
}

void Txn::EraseDoc(const std::string& key) {
  if (docs_->Find(key) == nullptr) return;
  std::string payload;
  records::EncodeDoc(key, {}, true, &payload);
  Append(log::RecordType::kDoc, payload);
  Undo u;
  u.kind = Undo::Kind::kDoc;
  u.doc_key = key;
  u.doc_before = docs_->Erase(key);
  undo_.push_back(std::move(u));
}

void Txn::SetRun(uint64_t id, std::optional<RunInfo> run) {
  Undo u;
  u.kind = Undo::Kind::kRun;
  u.id = id;
  if (const RunInfo* r = table_->Run(id)) u.run_before = *r;
  table_->SetRun(id, std::move(run));
  undo_.push_back(std::move(u));
}

void Txn::SetPaused(bool paused) {
  Undo u;
  u.kind = Undo::Kind::kPaused;
  u.paused_before = *paused_;
  *paused_ = paused;
  undo_.push_back(std::move(u));
}

uint32_t Txn::InternBatch(std::string_view name) {
  const size_t before = table_->batch_names().size();
  const uint32_t index = table_->InternBatch(name);
  if (table_->batch_names().size() > before) {
    Undo u;
    u.kind = Undo::Kind::kBatchName;
    undo_.push_back(std::move(u));
  }
  return index;
}

void Txn::RollbackTo(const Mark& m) {
  while (undo_.size() > m.undo) {
    Undo& u = undo_.back();
    switch (u.kind) {
      case Undo::Kind::kInserted: table_->Erase(u.id); break;
      case Undo::Kind::kReplaced: table_->Replace(u.before); break;
      case Undo::Kind::kErased: table_->Insert(u.before); break;
      case Undo::Kind::kRun: table_->SetRun(u.id, std::move(u.run_before)); break;
      case Undo::Kind::kPaused: *paused_ = u.paused_before; break;
      case Undo::Kind::kBatchName: table_->DropLastBatch(); break;
      case Undo::Kind::kDoc:
        if (u.doc_before) {
          docs_->Put(u.doc_key, std::move(*u.doc_before));
        } else {
          docs_->Erase(u.doc_key);
        }
        break;
    }
    undo_.pop_back();
  }
  events_.resize(m.events);
  sink_->Rollback(m.sink);
}

void Txn::ResolveLocations() {
  for (const Undo& u : undo_) {
    if (u.kind != Undo::Kind::kInserted && u.kind != Undo::Kind::kReplaced) continue;
    const JobMeta* m = table_->Find(u.id);
    if (m == nullptr) continue;
    if (!RecordSink::IsProvisional(m->job_loc) && !RecordSink::IsProvisional(m->status_loc)) continue;
    JobMeta n = *m;
    n.job_loc = sink_->Resolve(n.job_loc);
    n.status_loc = sink_->Resolve(n.status_loc);
    table_->Replace(n);
  }
}

}  // namespace comfymq
