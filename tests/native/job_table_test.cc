// The in-memory index: the flat multimap against a reference, and the exact undo that group commit
// relies on (every change taken back leaves every index as it was).
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "store/job_table.h"
#include "store/record_sink.h"
#include "store/txn.h"
#include "util/flat_multimap.h"

namespace comfymq {
namespace {

TEST(FlatMultiMap, MatchesAReferenceUnderRandomOperations) {
  FlatMultiMap64 m;
  std::multimap<uint64_t, uint64_t> ref;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 200000; ++i) {
    uint64_t key = rng() % 500;  // many collisions on purpose
    uint64_t value = 1 + rng() % 50;
    if (rng() % 3) {
      m.Insert(key, value);
      ref.emplace(key, value);
    } else {
      bool in_ref = false;
      for (auto [it, end] = ref.equal_range(key); it != end; ++it) {
        if (it->second == value) {
          ref.erase(it);
          in_ref = true;
          break;
        }
      }
      EXPECT_EQ(m.Erase(key, value), in_ref);
    }
    if (i % 10000 == 0) {
      for (uint64_t k = 0; k < 500; ++k) {
        std::multiset<uint64_t> got, want;
        m.ForEach(k, [&](uint64_t v) { got.insert(v); });
        for (auto [it, end] = ref.equal_range(k); it != end; ++it) want.insert(it->second);
        ASSERT_EQ(got, want) << "key " << k;
      }
    }
  }
  EXPECT_EQ(m.size(), ref.size());
}

std::string Fingerprint(const JobTable& t) {
  std::string s;
  t.ForEach([&](const JobMeta& m) {
    s += std::to_string(m.id) + ":" + std::to_string(static_cast<int>(m.state)) + ":" + std::to_string(m.priority) +
         ":" + std::to_string(m.status_loc.offset) + ";";
  });
  s += "|pending:";
  t.ForEachPending([&](uint64_t id) {
    s += std::to_string(id) + ",";
    return true;
  });
  s += "|counts:";
  for (int i = 0; i < kNumJobStates; ++i) s += std::to_string(t.count(static_cast<JobState>(i))) + ",";
  s += "|live:" + std::to_string(t.total_live_bytes());
  s += "|runs:" + std::to_string(t.runs().size());
  std::vector<uint64_t> ids;
  t.FindByPromptHash(42, &ids);
  s += "|p42:" + std::to_string(ids.size());
  return s;
}

TEST(JobTable, TxnRollbackRestoresEveryIndexExactly) {
  JobTable table;
  std::mt19937_64 rng(3);
  for (uint64_t id = 1; id <= 50; ++id) {
    JobMeta m;
    m.id = id;
    m.prompt_id_hash = id % 5 == 0 ? 42 : id * 1000;
    m.job_loc = log::RecordLoc{1, static_cast<uint32_t>(id * 100), 100};
    m.priority = static_cast<int32_t>(rng() % 3);
    table.Insert(m);
  }
  const std::string before = Fingerprint(table);
  RecordSink sink;
  bool paused = false;
  DocTable docs;
  Txn txn(&table, &docs, &sink, &paused, 0);
  for (int i = 0; i < 500; ++i) {
    uint64_t id = 1 + rng() % 60;
    const JobMeta* m = table.Find(id);
    int op = static_cast<int>(rng() % 4);
    if (m == nullptr) {
      if (id > table.max_id()) {
        JobMeta n;
        n.id = id;
        n.prompt_id_hash = 42;
        txn.Insert(n);
      }
    } else if (op == 0) {
      txn.Erase(id);
    } else if (op == 1) {
      JobMeta n = *m;
      n.state = static_cast<JobState>(rng() % kNumJobStates);
      n.status_loc = txn.Append(log::RecordType::kStatus, "x");
      txn.Replace(n);
    } else if (op == 2) {
      RunInfo r;
      r.token = rng();
      txn.SetRun(id, r);
    } else {
      txn.SetRun(id, std::nullopt);
    }
  }
  EXPECT_NE(Fingerprint(table), before);
  txn.RollbackAll();
  EXPECT_EQ(Fingerprint(table), before);
  EXPECT_TRUE(sink.empty());
}

// Jobs that wait for others: the dispatch order holds exactly the pending jobs whose waits have all succeeded,
// after any change, and a rollback restores it as it was.
TEST(JobTable, DispatchOrderHoldsReadyJobsOnlyAndRollsBackExactly) {
  JobTable table;
  std::mt19937_64 rng(11);
  auto ready_set = [&] {
    std::set<uint64_t> want;
    table.ForEach([&](const JobMeta& m) {
      if (m.state != JobState::kPending) return;
      bool ok = true;
      if (const auto* after = table.Waits(m.id)) {
        for (uint64_t dep : *after) {
          const JobMeta* d = table.Find(dep);
          ok &= d != nullptr && d->state == JobState::kSucceeded;
        }
      }
      if (ok) want.insert(m.id);
    });
    return want;
  };
  auto pending_set = [&] {
    std::set<uint64_t> got;
    table.ForEachPending([&](uint64_t id) {
      got.insert(id);
      return true;
    });
    return got;
  };
  for (uint64_t id = 1; id <= 60; ++id) {
    JobMeta m;
    m.id = id;
    m.priority = static_cast<int32_t>(rng() % 3);
    m.state = static_cast<JobState>(rng() % kNumJobStates);
    if (id > 5) table.SetWaits(id, {1 + rng() % (id - 1), 1 + rng() % (id - 1)});
    table.Insert(m);
  }
  ASSERT_EQ(pending_set(), ready_set());
  const std::string before = Fingerprint(table);
  RecordSink sink;
  bool paused = false;
  DocTable docs;
  Txn txn(&table, &docs, &sink, &paused, 0);
  for (int i = 0; i < 2000; ++i) {
    uint64_t id = 1 + rng() % 60;
    const JobMeta* m = table.Find(id);
    if (m == nullptr) continue;
    if (rng() % 8 == 0) {
      txn.Erase(id);
    } else if (rng() % 4 == 0) {  // the same state: its records moved (compaction), or its prompt_id's hash
      JobMeta n = *m;
      n.job_loc = log::RecordLoc{2, static_cast<uint32_t>(rng() % 100000), 64};
      if (rng() % 2) n.prompt_id_hash = 1 + rng() % 7;
      txn.Replace(n);
    } else {
      JobMeta n = *m;
      n.state = static_cast<JobState>(rng() % kNumJobStates);
      n.status_loc = txn.Append(log::RecordType::kStatus, "x");
      txn.Replace(n);
    }
    ASSERT_EQ(pending_set(), ready_set()) << "after change " << i;
    ASSERT_EQ(table.waiting() + pending_set().size(), table.count(JobState::kPending));
  }
  txn.RollbackAll();
  EXPECT_EQ(Fingerprint(table), before);
  EXPECT_EQ(pending_set(), ready_set());
}

TEST(JobTable, TxnRollbackForgetsTheBatchNamesItInterned) {
  JobTable table;
  const uint32_t kept = table.InternBatch("kept");
  RecordSink sink;
  bool paused = false;
  DocTable docs;
  Txn txn(&table, &docs, &sink, &paused, 0);
  EXPECT_EQ(txn.InternBatch("kept"), kept);  // known already: nothing to undo
  const Txn::Mark m = txn.mark();
  const uint32_t a = txn.InternBatch("sweep.a");
  EXPECT_EQ(txn.InternBatch("sweep.a"), a);
  txn.InternBatch("sweep.b");
  txn.RollbackTo(m);
  uint32_t index = 0;
  EXPECT_FALSE(table.FindBatch("sweep.a", &index));
  EXPECT_FALSE(table.FindBatch("sweep.b", &index));
  EXPECT_EQ(table.batch_names(), (std::vector<std::string>{"", "kept"}));
  // a name interned again after the rollback gets the freed index
  EXPECT_EQ(txn.InternBatch("sweep.c"), a);
  txn.RollbackAll();
  EXPECT_TRUE(table.FindBatch("kept", &index));
  EXPECT_EQ(index, kept);
  EXPECT_EQ(table.batch_names().size(), 2u);
}

TEST(JobTable, ScanWalksBothWaysWithCursorsAndBounds) {
  JobTable t;
  for (uint64_t id = 10; id <= 100; id += 10) {
    JobMeta m;
    m.id = id;
    t.Insert(m);
  }
  t.Erase(50);
  auto walk = [&](uint64_t cursor, bool desc, uint64_t lo, uint64_t hi) {
    std::vector<uint64_t> v;
    t.Scan(cursor, desc, lo, hi, [&](const JobMeta& m) {
      v.push_back(m.id);
      return true;
    });
    return v;
  };
  EXPECT_EQ(walk(0, false, 0, 0), (std::vector<uint64_t>{10, 20, 30, 40, 60, 70, 80, 90, 100}));
  EXPECT_EQ(walk(0, true, 0, 0), (std::vector<uint64_t>{100, 90, 80, 70, 60, 40, 30, 20, 10}));
  EXPECT_EQ(walk(60, true, 0, 0), (std::vector<uint64_t>{40, 30, 20, 10}));
  EXPECT_EQ(walk(60, false, 0, 0), (std::vector<uint64_t>{70, 80, 90, 100}));
  EXPECT_EQ(walk(0, false, 30, 80), (std::vector<uint64_t>{30, 40, 60, 70}));
  EXPECT_EQ(walk(0, true, 30, 80), (std::vector<uint64_t>{70, 60, 40, 30}));
}

TEST(RecordSink, PlacesAWholeGroupAndResolvesLocations) {
  RecordSink sink;
  auto a = sink.Add(log::RecordType::kJob, std::string(50, 'a'));
  auto mark = sink.mark();
  sink.Add(log::RecordType::kJob, "taken back");
  sink.Rollback(mark);
  auto b = sink.Add(log::RecordType::kStatus, std::string(100, 'b'));
  EXPECT_TRUE(RecordSink::IsProvisional(a));
  std::string_view framed;
  ASSERT_TRUE(sink.Find(b, &framed));  // readable by provisional location while the group is built
  // It fits after the tail: placed there, one group.
  sink.Finalize(3, 1000, 4096, 1 << 20);
  EXPECT_FALSE(sink.placement().new_segment);
  log::RecordLoc rb = sink.Resolve(b);
  EXPECT_EQ(rb.segment, 3u);
  EXPECT_EQ(rb.offset, 1000u + b.offset);
  ASSERT_TRUE(sink.Find(rb, &framed));
  log::RecordType type;
  std::string_view payload;
  ASSERT_TRUE(log::ParseFramedRecord(framed, &type, &payload).ok());
  EXPECT_EQ(payload, std::string(100, 'b'));
  EXPECT_EQ(sink.size(), log::kRecordHeaderSize + 2 * log::kRecordHeaderSize + 150);

  // It does not fit: the whole group goes to a new segment, sized for it if it is bigger than a segment.
  RecordSink big;
  big.Add(log::RecordType::kJob, std::string(10000, 'c'));
  big.Finalize(3, 1000, 4096, 4096);
  EXPECT_TRUE(big.placement().new_segment);
  EXPECT_EQ(big.placement().segment, 4u);
  EXPECT_EQ(big.placement().offset, log::kSegmentHeaderSize);
  EXPECT_GE(big.placement().capacity, log::kSegmentHeaderSize + big.size());
}

}  // namespace
}  // namespace comfymq
