// Fencing tokens callers see: unique and non-zero like the store's counter, not guessable from tokens one has
// seen, stable across reopening (a worker's lease survives a host restart), and owned by each store.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "comfymq/store.h"
#include "store/token_codec.h"
#include "test_util.h"
#include "testing/mem_env.h"

namespace comfymq {
namespace {

using ::comfymq::testing::PromptFor;
using ::comfymq::testing::SmallOptions;

TEST(SipHash, MatchesTheReferenceVector) {
  // The reference implementation's vector for an 8-byte message 00 01 .. 07 under the key 00 01 .. 0f.
  SipKey key{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
  EXPECT_EQ(SipHash64(key, 0x0706050403020100ULL), 0x93f5f5799a932462ULL);
}

TEST(TokenCodec, ItIsAPermutationOfTheNonZeroValuesThatHidesTheCounter) {
  MemEnv env;
  ASSERT_TRUE(CreateDirs(&env, "/db").ok());
  TokenCodec codec;
  std::vector<std::string> warnings;
  ASSERT_TRUE(codec.Open(&env, "/db", &warnings).ok());
  EXPECT_TRUE(warnings.empty());
  std::set<uint64_t> seen;
  uint64_t previous = 0;
  for (uint64_t c = 1; c <= 100000; ++c) {
    const uint64_t t = codec.External(c);
    ASSERT_NE(t, 0u);
    ASSERT_TRUE(seen.insert(t).second) << "two counters gave token " << t;
    ASSERT_EQ(codec.Internal(t), c);
    if (c > 1) {
      // Neighbouring counters give tokens far apart: seeing one token tells nothing of the next.
      const uint64_t gap = t > previous ? t - previous : previous - t;
      EXPECT_GT(gap, uint64_t{1} << 32) << "counters " << c - 1 << " and " << c;
    }
    previous = t;
  }
  EXPECT_EQ(codec.Internal(0), 0u);
  // Tokens nobody was given decode to counters far beyond any store's.
  EXPECT_GT(codec.Internal(codec.External(5) + 1), uint64_t{1} << 40);
}

TEST(TokenCodec, TheKeyIsKeptAcrossOpensAndEachStoreHasItsOwn) {
  MemEnv env;
  ASSERT_TRUE(CreateDirs(&env, "/one").ok());
  ASSERT_TRUE(CreateDirs(&env, "/two").ok());
  TokenCodec a, again, other;
  std::vector<std::string> warnings;
  ASSERT_TRUE(a.Open(&env, "/one", &warnings).ok());
  ASSERT_TRUE(again.Open(&env, "/one", &warnings).ok());
  ASSERT_TRUE(other.Open(&env, "/two", &warnings).ok());
  EXPECT_EQ(a.External(42), again.External(42));
  EXPECT_NE(a.External(42), other.External(42));
  // A power cut right after: the key was synced (file and directory) before it was used.
  std::mt19937_64 rng(1);
  for (auto mode : {MemEnv::CrashMode::kTornPrefix, MemEnv::CrashMode::kRandomSectors}) {
    std::unique_ptr<MemEnv> image = env.CrashImage(rng, mode);
    TokenCodec after;
    ASSERT_TRUE(after.Open(image.get(), "/one", &warnings).ok());
    EXPECT_EQ(after.External(42), a.External(42));
  }
  EXPECT_TRUE(warnings.empty());
}

TEST(TokenCodec, ADamagedKeyIsReplacedWithAWarning) {
  MemEnv env;
  ASSERT_TRUE(CreateDirs(&env, "/db").ok());
  TokenCodec a;
  std::vector<std::string> warnings;
  ASSERT_TRUE(a.Open(&env, "/db", &warnings).ok());
  std::string text;
  ASSERT_TRUE(env.ReadFileToString("/db/token.key", &text).ok());
  text[10] ^= 0x40;
  ASSERT_TRUE(env.WriteFileAtomically("/db/token.key", text).ok());
  TokenCodec b;
  ASSERT_TRUE(b.Open(&env, "/db", &warnings).ok());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("token.key"), std::string::npos);
  EXPECT_NE(b.External(7), a.External(7));
}

TEST(StoreTokens, LeasesCarryUnguessableTokensThatStillFenceAndSurviveReopen) {
  MemEnv env;
  std::unique_ptr<Store> store;
  ASSERT_TRUE(Store::Open(SmallOptions(&env), "/db", &store).ok());
  std::vector<std::unique_ptr<Lease>> leases;
  for (uint64_t i = 0; i < 50; ++i) {
    NewJob j;
    j.prompt = PromptFor(i);
    EnqueueResult r;
    ASSERT_TRUE(store->Enqueue(j, &r).ok());
    TakeOptions o;
    o.worker_id = "w";
    std::unique_ptr<Lease> l;
    ASSERT_TRUE(store->Take(o, &l).ok());
    ASSERT_TRUE(l);
    leases.push_back(std::move(l));
  }
  for (size_t i = 1; i < leases.size(); ++i) {
    const uint64_t a = leases[i - 1]->token, b = leases[i]->token;
    EXPECT_GT(a > b ? a - b : b - a, uint64_t{1} << 32) << "consecutive leases got tokens " << a << " and " << b;
  }
  const Lease& l = *leases[7];
  Job job;
  ASSERT_TRUE(store->Get(l.job_id, false, &job).ok());
  EXPECT_EQ(job.lease_token, l.token);
  // A guess next to the real token is stale, and the refusal does not tell the real one.
  Status s = store->Heartbeat(l.job_id, l.token + 1, 1000, nullptr);
  ASSERT_TRUE(s.IsLeaseLost()) << s.ToString();
  EXPECT_EQ(s.message().find(std::to_string(l.token)), std::string::npos) << s.message();
  EXPECT_TRUE(store->Complete(l.job_id, leases[8]->token, "{}", {}).IsLeaseLost());
  // After reopening (a host restart), the worker's token still owns its job.
  store.reset();
  ASSERT_TRUE(Store::Open(SmallOptions(&env), "/db", &store).ok());
  EXPECT_TRUE(store->Heartbeat(l.job_id, l.token, 1000, nullptr).ok());
  EXPECT_TRUE(store->Complete(l.job_id, l.token, "{}", {}).ok());
  EXPECT_TRUE(store->Complete(l.job_id, l.token, "{}", {}).IsAlreadyExists()) << "a resend is still recognised";
}

}  // namespace
}  // namespace comfymq
