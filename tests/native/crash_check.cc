#include "crash_check.h"

#include "test_util.h"

namespace comfymq::testing {

std::string CrashTally::Line(const char* name) const {
  return std::string("[ ") + name + " ] trials=" + std::to_string(trials) +
         " acknowledged=" + std::to_string(acknowledged) + " lost=" + std::to_string(lost) +
         " duplicated=" + std::to_string(duplicated) + " half_made=" + std::to_string(half_made) +
         " failed_opens=" + std::to_string(failed_opens);
}

namespace {
void Problem(CrashTally* t, const std::string& p) {
  if (t->problems.size() < 10) t->problems.push_back(p);
}
}  // namespace

void CheckAfterCrash(Store* store, const std::vector<Ack>& acks, const std::set<uint64_t>& deleted, CrashTally* t) {
  // Read back every job, with prompt.
  std::map<int64_t, std::vector<Job>> by_seq;
  ListQuery q;
  q.limit = 1000;
  q.with_prompt = true;
  q.newest_first = false;
  for (;;) {
    ListPage page;
    Status s = store->List(q, &page);
    if (!s.ok()) {
      t->half_made++;
      Problem(t, "list failed: " + s.ToString());
      return;
    }
    for (Job& j : page.jobs) {
      int64_t seq = SeqOfPrompt(j.prompt);
      if (seq < 0 || j.prompt_id != PromptIdFor(static_cast<uint64_t>(seq))) {
        t->half_made++;
        Problem(t, "job " + FormatJobId(j.id) + " has a damaged prompt or prompt_id");
        continue;
      }
      if (j.state == JobState::kSucceeded && j.outputs != OutputsFor(static_cast<uint64_t>(seq))) {
        t->half_made++;
        Problem(t, "job seq " + std::to_string(seq) + " succeeded with damaged outputs");
      }
      by_seq[seq].push_back(std::move(j));
    }
    if (page.next_cursor == 0) break;
    q.cursor = page.next_cursor;
  }
  for (const auto& [seq, jobs] : by_seq) {
    if (jobs.size() > 1) {
      t->duplicated += jobs.size() - 1;
      Problem(t, "seq " + std::to_string(seq) + " stored " + std::to_string(jobs.size()) + " times");
    }
  }
  for (const Ack& a : acks) {
    t->acknowledged++;
    if (deleted.count(a.seq)) continue;
    auto it = by_seq.find(static_cast<int64_t>(a.seq));
    if (it == by_seq.end()) {
      t->lost++;
      Problem(t, "acknowledged job seq " + std::to_string(a.seq) + " is missing");
      continue;
    }
    const Job& j = it->second.front();
    if (a.kind == Ack::kCompleted && j.state != JobState::kSucceeded) {
      t->lost++;
      Problem(t, "acknowledged completion of seq " + std::to_string(a.seq) + " reverted to " + JobStateName(j.state));
    }
    if (a.kind == Ack::kCancelled && j.state != JobState::kCancelled) {
      t->lost++;
      Problem(t, "acknowledged cancel of seq " + std::to_string(a.seq) + " reverted to " + JobStateName(j.state));
    }
  }
  // The counts the store keeps agree with what it lists.
  StoreStats st;
  if (store->Stats(&st).ok()) {
    uint64_t listed = 0;
    for (const auto& [seq, jobs] : by_seq) listed += jobs.size();
    if (st.total != listed) {
      t->half_made++;
      Problem(t, "stats say " + std::to_string(st.total) + " jobs, list shows " + std::to_string(listed));
    }
  }
}

}  // namespace comfymq::testing
