// FairQueue: priority first; within a priority owners take turns by weight; a newcomer is not starved by a
// backlog; Position() agrees with the order ForEach() walks, for random queues; skipped owners drop out.
#include "store/fair_queue.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

namespace comfymq {
namespace {

std::vector<uint64_t> Order(const FairQueue& q, const std::function<bool(uint16_t)>* eligible = nullptr) {
  std::vector<uint64_t> out;
  q.ForEach(eligible, [&](uint64_t id) {
    out.push_back(id);
    return true;
  });
  return out;
}

// Takes the first job of the order, as the store's Take does: charge the owner, then remove the job.
uint64_t TakeNext(FairQueue* q, const std::map<uint64_t, std::pair<int32_t, uint16_t>>& where) {
  uint64_t first = 0;
  q->ForEach(nullptr, [&](uint64_t id) {
    first = id;
    return false;
  });
  if (first == 0) return 0;
  const auto& [priority, owner] = where.at(first);
  q->Took(priority, owner);
  q->Remove(first, priority, owner);
  return first;
}

TEST(FairQueueTest, OneOwnerIsPlainFifoWithinPriority) {
  FairQueue q;
  q.Add(3, 0, 1);
  q.Add(1, 0, 1);
  q.Add(2, 5, 1);
  q.Add(4, 0, 1);
  EXPECT_EQ(Order(q), (std::vector<uint64_t>{2, 1, 3, 4}));
  EXPECT_EQ(q.size(), 4u);
  EXPECT_EQ(q.oldest(), 1u);
  q.Remove(3, 0, 1);
  EXPECT_EQ(Order(q), (std::vector<uint64_t>{2, 1, 4}));
}

TEST(FairQueueTest, EqualOwnersAlternateAndASingleJobIsNotStarved) {
  FairQueue q;
  std::map<uint64_t, std::pair<int32_t, uint16_t>> where;
  for (uint64_t id = 1; id <= 1000; ++id) {  // owner 1's sweep first
    q.Add(id, 0, 1);
    where[id] = {0, 1};
  }
  q.Add(5000, 0, 2);  // then owner 2's one job
  where[5000] = {0, 2};
  // Owner 2's job comes second, not 1001st.
  EXPECT_EQ(Order(q)[1], 5000u);
  uint64_t pos = 0;
  ASSERT_TRUE(q.Position(5000, 0, 2, &pos));
  EXPECT_EQ(pos, 1u);
  EXPECT_EQ(TakeNext(&q, where), 1u);
  EXPECT_EQ(TakeNext(&q, where), 5000u);
  EXPECT_EQ(TakeNext(&q, where), 2u);
}

TEST(FairQueueTest, HigherPriorityAlwaysFirst) {
  FairQueue q;
  q.Add(1, 0, 1);
  q.Add(2, 0, 2);
  q.Add(3, 1, 1);
  q.Add(4, 1, 1);
  EXPECT_EQ(Order(q), (std::vector<uint64_t>{3, 4, 1, 2}));
}

TEST(FairQueueTest, WeightedSharesOverThreeThousandTakes) {
  FairQueue q;
  const std::map<uint16_t, uint32_t> weights = {{1, 1}, {2, 2}, {3, 3}};
  std::map<uint64_t, std::pair<int32_t, uint16_t>> where;
  uint64_t id = 0;
  for (const auto& [owner, w] : weights) {
    q.SetWeight(owner, w);
    for (int i = 0; i < 5000; ++i) {  // every owner stays backlogged for the whole measurement
      q.Add(++id, 0, owner);
      where[id] = {0, owner};
    }
  }
  std::map<uint16_t, int> got;
  for (int i = 0; i < 3000; ++i) got[where.at(TakeNext(&q, where)).second]++;
  for (const auto& [owner, w] : weights) {
    const double share = got[owner] / 3000.0, want = w / 6.0;
    EXPECT_NEAR(share, want, want * 0.05) << "owner " << owner << " got " << got[owner];
  }
}

TEST(FairQueueTest, ANewcomerStartsAtTheLevelsPassNotWithBankedCredit) {
  FairQueue q;
  std::map<uint64_t, std::pair<int32_t, uint16_t>> where;
  for (uint64_t id = 1; id <= 100; ++id) {
    q.Add(id, 0, 1);
    where[id] = {0, 1};
  }
  for (int i = 0; i < 50; ++i) TakeNext(&q, where);  // owner 1 alone for a while
  for (uint64_t id = 1001; id <= 1010; ++id) {
    q.Add(id, 0, 2);
    where[id] = {0, 2};
  }
  // Owner 2 then gets every other job, not its 50 "missed" turns in a row.
  std::vector<uint16_t> owners;
  for (int i = 0; i < 6; ++i) owners.push_back(where.at(TakeNext(&q, where)).second);
  int mine = 0;
  for (uint16_t o : owners) mine += o == 2;
  EXPECT_EQ(mine, 3);
}

TEST(FairQueueTest, SkippedOwnersLeaveTheOrder) {
  FairQueue q;
  q.Add(1, 0, 1);
  q.Add(2, 0, 2);
  q.Add(3, 0, 1);
  const std::function<bool(uint16_t)> not_one = [](uint16_t o) { return o != 1; };
  EXPECT_EQ(Order(q, &not_one), (std::vector<uint64_t>{2}));
  const std::function<bool(uint16_t)> none = [](uint16_t) { return false; };
  EXPECT_TRUE(Order(q, &none).empty());
}

TEST(FairQueueTest, PositionAgreesWithTheOrderForRandomQueues) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    FairQueue q;
    std::map<uint64_t, std::pair<int32_t, uint16_t>> where;
    const int owners = 1 + static_cast<int>(rng() % 5);
    for (uint16_t o = 0; o < owners; ++o) q.SetWeight(o, 1 + static_cast<uint32_t>(rng() % 4));
    uint64_t id = 0;
    const int jobs = 1 + static_cast<int>(rng() % 60);
    for (int i = 0; i < jobs; ++i) {
      id += 1 + rng() % 3;
      const auto prio = static_cast<int32_t>(rng() % 3);
      const auto owner = static_cast<uint16_t>(rng() % owners);
      q.Add(id, prio, owner);
      where[id] = {prio, owner};
    }
    for (int i = 0; i < static_cast<int>(rng() % 10); ++i) TakeNext(&q, where);  // move the passes
    const auto order = Order(q);
    ASSERT_EQ(order.size(), q.size());
    for (size_t i = 0; i < order.size(); ++i) {
      uint64_t pos = 0;
      const auto& [prio, owner] = where.at(order[i]);
      ASSERT_TRUE(q.Position(order[i], prio, owner, &pos));
      EXPECT_EQ(pos, i) << "trial " << trial << " job " << order[i];
    }
  }
}

}  // namespace
}  // namespace comfymq
