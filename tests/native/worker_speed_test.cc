// WorkerSpeed: a worker twice as fast as another ends with about half its factor, per graph shape (a slow shape
// makes no worker look slow), failures measure nothing, and the tables stay bounded.
#include "net/worker_speed.h"

#include <gtest/gtest.h>

namespace comfymq::net {
namespace {

// Runs `n` jobs of `shape` on each of the workers, alternating, each taking its own time (ms).
void RunAlternating(WorkerSpeed* s, const std::vector<std::pair<std::string, int64_t>>& workers, uint64_t shape, int n,
                    uint64_t* job) {
  int64_t now = 1000;
  for (int i = 0; i < n; ++i) {
    for (const auto& [w, ms] : workers) {
      ++*job;
      s->Started(*job, w, shape, now);
      std::string who;
      EXPECT_TRUE(s->Ended(*job, true, now + ms, &who));
      EXPECT_EQ(who, w);
      now += ms;
    }
  }
}

TEST(WorkerSpeedTest, TwiceAsFastHasAboutHalfTheFactor) {
  WorkerSpeed s;
  uint64_t job = 0;
  EXPECT_EQ(s.Factor("fast"), 1.0);  // unknown: average
  RunAlternating(&s, {{"slow", 2000}, {"fast", 1000}}, 7, 20, &job);
  EXPECT_LT(s.Factor("fast"), 1.0);
  EXPECT_GT(s.Factor("slow"), 1.0);
  EXPECT_NEAR(s.Factor("slow") / s.Factor("fast"), 2.0, 0.1);
  EXPECT_EQ(s.Runs("fast"), 20u);
}

TEST(WorkerSpeedTest, ASlowShapeDoesNotMakeItsWorkerLookSlow) {
  WorkerSpeed s;
  uint64_t job = 0;
  RunAlternating(&s, {{"a", 1000}, {"b", 1000}}, 1, 10, &job);
  // a then runs only a heavy shape, b only a light one: each is as fast as the farm on its shape
  RunAlternating(&s, {{"a", 60000}}, 2, 10, &job);
  RunAlternating(&s, {{"b", 10}}, 3, 10, &job);
  EXPECT_NEAR(s.Factor("a"), 1.0, 0.05);
  EXPECT_NEAR(s.Factor("b"), 1.0, 0.05);
}

TEST(WorkerSpeedTest, FailuresAndUnknownRunsMeasureNothing) {
  WorkerSpeed s;
  s.Started(1, "w", 1, 0);
  std::string who;
  EXPECT_FALSE(s.Ended(1, false, 5000, &who));
  EXPECT_EQ(who, "w");
  EXPECT_FALSE(s.Ended(2, true, 5000, &who));  // never started
  EXPECT_EQ(s.Runs("w"), 0u);
  s.Forget("w");
  EXPECT_EQ(s.Factor("w"), 1.0);
}

TEST(WorkerSpeedTest, RunsInFlightAreBounded) {
  WorkerSpeed s;
  for (uint64_t j = 1; j <= WorkerSpeed::kMaxInFlight + 10; ++j) s.Started(j, "w", 1, 0);
  std::string who;
  EXPECT_FALSE(s.Ended(1, true, 10, &who));  // the oldest went
  EXPECT_TRUE(s.Ended(WorkerSpeed::kMaxInFlight + 10, true, 10, &who));
}

}  // namespace
}  // namespace comfymq::net
