// Inputs that travel with jobs, over real ZeroMQ sockets: a worker fetches an input a job it holds names from the
// host's input store (FETCH / INPUT), whole and checked; anything else is refused with the reason and nothing is
// sent. Against a hand-written broker: a damaged chunk is asked for again, a file that hashes wrong is fetched once
// more then refused, and a lost link ends the fetch at once.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "cluster_fixture.h"
#include "util/sha256.h"

namespace comfymq {
namespace {

const std::string kCaps = Caps({"LoadImage", "SaveImage"});

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

std::string GraphWithInput(const std::string& sha256) {
  json p = {
      {"1", {{"class_type", "LoadImage"}, {"inputs", {{"image", {{"comfymq_input", sha256}, {"name", "x.png"}}}}}}},
      {"2", {{"class_type", "SaveImage"}, {"inputs", {{"images", {"1", 0}}}}}}};
  return p.dump();
}

class InputTransferTest : public ClusterTest {
 protected:
  void SetUp() override {
    ClusterTest::SetUp();
    broker_.reset();
    BrokerOptions o;
    o.inputs_dir = tmp_.Sub("inputs");
    StartBroker("tcp://127.0.0.1:*", &o);
  }
  // Puts bytes into the host's input store (as the host's Python input store lays it out); returns the sha256.
  std::string StoreInput(const std::string& bytes) {
    const std::string sha = Sha256::Hex(bytes);
    const std::string dir = tmp_.Sub("inputs") + "/" + sha.substr(0, 2);
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/" + sha, std::ios::binary) << bytes;
    return sha;
  }
  // A worker holding the job of a prompt naming `sha`.
  JobAssignment TakeJobNaming(WorkerClient* w, const std::string& sha) {
    Enqueue(GraphWithInput(sha));
    JobAssignment a;
    EXPECT_TRUE(w->NextJob(5000, &a));
    return a;
  }
};

TEST_F(InputTransferTest, AWorkerFetchesTheInputsOfItsJobWholeAndChecked) {
  WorkerClient* w = AddWorker("gpu-1", kCaps);
  const std::string small = RandomBytes(1000, 1);
  const std::string big = RandomBytes(20 * 1024 * 1024 + 123, 2);  // many windows of 1 MiB chunks
  const std::string small_sha = StoreInput(small), big_sha = StoreInput(big), empty_sha = StoreInput("");
  Enqueue(GraphWithInput(small_sha));
  JobAssignment a;
  ASSERT_TRUE(w->NextJob(5000, &a));
  (void)big_sha;

  uint64_t size = 0;
  const std::string dest = tmp_.Sub("cache") + "/small";
  std::filesystem::create_directories(tmp_.Sub("cache"));
  Status s = w->FetchInput(a.job_id, a.token, small_sha, dest, 10000, &size);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(size, small.size());
  EXPECT_EQ(ReadFile(dest), small);

  // A job naming the big and the empty input: both arrive whole; no temp file is left beside them.
  json g = json::parse(GraphWithInput(big_sha));
  g["3"] = {{"class_type", "LoadImage"}, {"inputs", {{"image", {{"comfymq_input", empty_sha}}}}}};
  ASSERT_TRUE(w->Complete(a.job_id, a.token, "{}", {}).ok());
  Enqueue(g.dump());
  JobAssignment b;
  ASSERT_TRUE(w->NextJob(5000, &b));
  s = w->FetchInput(b.job_id, b.token, big_sha, tmp_.Sub("cache") + "/big", 30000, &size);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(size, big.size());
  EXPECT_TRUE(ReadFile(tmp_.Sub("cache") + "/big") == big);
  s = w->FetchInput(b.job_id, b.token, empty_sha, tmp_.Sub("cache") + "/empty", 10000, &size);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(size, 0u);
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp_.Sub("cache"))) files += e.is_regular_file();
  EXPECT_EQ(files, 3);
  BrokerCounters c = broker_->Counters();
  EXPECT_EQ(c.input_fetches, 3u);
  EXPECT_EQ(c.input_bytes_sent, small.size() + big.size());
  EXPECT_EQ(c.input_refused, 0u);
}

TEST_F(InputTransferTest, AnInputNoHeldJobNamesIsRefusedAndNothingIsSent) {
  WorkerClient* w = AddWorker("gpu-1", kCaps);
  const std::string mine = StoreInput("mine"), other = StoreInput("someone else's input");
  JobAssignment a = TakeJobNaming(w, mine);
  std::filesystem::create_directories(tmp_.Sub("cache"));
  const std::string dest = tmp_.Sub("cache") + "/x";
  uint64_t size = 0;
  // An input of the host that this job does not name.
  Status s = w->FetchInput(a.job_id, a.token, other, dest, 5000, &size);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("names no input"), std::string::npos) << s.ToString();
  // Its own input under a guessed lease token, and under another job's id.
  s = w->FetchInput(a.job_id, a.token + 1, mine, dest, 5000, &size);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("does not hold"), std::string::npos) << s.ToString();
  s = w->FetchInput(a.job_id + 1, a.token, mine, dest, 5000, &size);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  // A job naming an input the host does not have (removed): refused, said so.
  const std::string gone = Sha256::Hex("never stored");
  ASSERT_TRUE(w->Complete(a.job_id, a.token, "{}", {}).ok());
  JobAssignment b = TakeJobNaming(w, gone);
  s = w->FetchInput(b.job_id, b.token, gone, dest, 5000, &size);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("has no input"), std::string::npos) << s.ToString();
  // Bad arguments never reach the host.
  EXPECT_TRUE(w->FetchInput(b.job_id, b.token, "../../etc/passwd", dest, 5000, &size).IsInvalidArgument());
  EXPECT_FALSE(std::filesystem::exists(dest));
  for (const auto& e : std::filesystem::directory_iterator(tmp_.Sub("cache"))) ADD_FAILURE() << e.path();
  BrokerCounters c = broker_->Counters();
  EXPECT_EQ(c.input_bytes_sent, 0u);
  EXPECT_GE(c.input_refused, 3u);
}

TEST_F(InputTransferTest, AWorkerWithoutTheLeaseGetsNothingEvenWhenItNamesTheJob) {
  // A hand-written worker names a job another worker holds, with guessed tokens: refused every time.
  WorkerClient* w = AddWorker("gpu-1", kCaps);
  const std::string sha = StoreInput(RandomBytes(5000, 3));
  JobAssignment a = TakeJobNaming(w, sha);
  auto thief = RawPeer::Worker(endpoint_);
  thief->Send(RawPeer::Hello("thief", kCaps));
  proto::Message m;
  ASSERT_TRUE(thief->Expect(proto::Cmd::kWelcome, &m));
  for (uint64_t token : {a.token, a.token + 1, uint64_t{0}}) {
    proto::Message f;
    f.cmd = proto::Cmd::kFetch;
    f.fetch = 1;
    f.job_id = a.job_id;
    f.token = token;
    f.file_sha256 = sha;
    f.count = 8;
    thief->Send(f);
    ASSERT_TRUE(thief->Expect(proto::Cmd::kInput, &m));
    EXPECT_EQ(m.chunk_status, proto::ChunkStatus::kRefused);
    EXPECT_TRUE(m.data.empty());
  }
  EXPECT_EQ(broker_->Counters().input_bytes_sent, 0u);
}

TEST_F(InputTransferTest, AWorkerThatKeepsAJobsInputsIsPreferredWhileItAsksForWork) {
  // "a-other" first: where nothing else decides, the dispatch order would give it the jobs.
  WorkerClient* other = AddWorker("a-other", kCaps);
  ASSERT_FALSE(NextWorkerEvent(other, "connected").is_null());
  WorkerClient* keeper = AddWorker("keeper", kCaps);
  ASSERT_FALSE(NextWorkerEvent(keeper, "connected").is_null());
  const std::string kept = StoreInput("kept"), elsewhere = StoreInput("kept nowhere");
  ASSERT_TRUE(keeper->UpdateInputs({kept}).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // INPUTS reached the broker
  // Both idle, one job at a time: every job naming `kept` goes to the keeper.
  for (int i = 0; i < 10; ++i) {
    const uint64_t id = Enqueue(GraphWithInput(kept));
    JobAssignment a;
    ASSERT_TRUE(keeper->NextJob(5000, &a)) << "job " << i << " went to " << Get(id).worker_id;
    EXPECT_EQ(a.job_id, id);
    ASSERT_TRUE(keeper->Complete(a.job_id, a.token, "{}", {}).ok());
    ASSERT_TRUE(WaitFor([&] { return Get(id).state == JobState::kSucceeded; }));
  }
  // An input nobody keeps is no reason to wait: either worker takes it.
  const uint64_t any = Enqueue(GraphWithInput(elsewhere));
  ASSERT_TRUE(WaitFor([&] { return Get(any).state == JobState::kRunning; }));
  WorkerClient* ran = Get(any).worker_id == "keeper" ? keeper : other;
  JobAssignment a;
  ASSERT_TRUE(ran->NextJob(5000, &a));
  ASSERT_TRUE(ran->Complete(a.job_id, a.token, "{}", {}).ok());
  ASSERT_TRUE(WaitFor([&] { return Get(any).state == JobState::kSucceeded; }));  // (its READY came first)
  // The keeper busy (it holds a job and asks for nothing): the next job naming `kept` goes to the other at once.
  const uint64_t first = Enqueue(GraphWithInput(kept));
  ASSERT_TRUE(keeper->NextJob(5000, &a));
  EXPECT_EQ(a.job_id, first);
  const uint64_t second = Enqueue(GraphWithInput(kept));
  JobAssignment b;
  ASSERT_TRUE(other->NextJob(5000, &b)) << "the job waited for its busy keeper";
  EXPECT_EQ(b.job_id, second);
  // A worker says at most 4096 inputs, each a sha256.
  EXPECT_TRUE(keeper->UpdateInputs({"../x"}).IsInvalidArgument());
  EXPECT_TRUE(keeper->UpdateInputs(std::vector<std::string>(4097, kept)).IsInvalidArgument());
}

TEST_F(InputTransferTest, AWorkerThatDoesNotReadGetsNoMoreThanItsWindowHoweverManyFetchesItSends) {
  // A hand-written worker holding a job that names a 32 MiB input sends 200 FETCHes and reads nothing: the broker
  // queues at most kMaxUnreadInputChunks chunks for it (it used to read and queue every one: GBs of memory).
  const std::string sha = StoreInput(RandomBytes(32u << 20, 7));
  const uint64_t id = Enqueue(GraphWithInput(sha));
  auto evil = RawPeer::Worker(endpoint_);
  evil->Send(RawPeer::Hello("evil", kCaps));
  proto::Message m;
  ASSERT_TRUE(evil->Expect(proto::Cmd::kWelcome, &m));
  proto::Message ready;
  ready.cmd = proto::Cmd::kReady;
  ready.credit = 1;
  evil->Send(ready);
  ASSERT_TRUE(evil->Expect(proto::Cmd::kJob, &m));
  ASSERT_EQ(m.job_id, id);
  const uint64_t token = m.token;
  proto::Message f;
  f.cmd = proto::Cmd::kFetch;
  f.job_id = id;
  f.token = token;
  f.file_sha256 = sha;
  f.count = proto::kChunkWindow;
  for (int i = 0; i < 200; ++i) {
    f.fetch = 1 + i;
    f.offset = static_cast<uint64_t>(i % 4) * proto::kChunkWindow * proto::kChunkBytes;
    f.receipt = 0x1234 + i;  // guessed receipts prove nothing
    evil->Send(f);
  }
  proto::Message hb;
  hb.cmd = proto::Cmd::kHeartbeat;
  for (int i = 0; i < 75; ++i) {  // 1.5 s, alive (heartbeats) but reading nothing
    evil->Send(hb);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const uint64_t sent = broker_->Counters().input_chunks;
  EXPECT_LE(sent, 16u) << "chunks queued for a worker that read none of them";
  EXPECT_GE(sent, 8u);
  // Reading them, and echoing the newest receipt, lets the next FETCH through.
  uint64_t newest = 0;
  int data_chunks = 0;
  for (int quiet = 0; quiet < 15;) {
    evil->Send(hb);
    if (!evil->Recv(&m, 20)) {
      quiet++;
      continue;
    }
    if (m.cmd == proto::Cmd::kInput && m.chunk_status == proto::ChunkStatus::kOk) {
      data_chunks++;
      newest = m.receipt;
    }
  }
  EXPECT_EQ(static_cast<uint64_t>(data_chunks), sent);
  ASSERT_NE(newest, 0u);
  f.fetch = 999;
  f.offset = 0;
  f.receipt = newest;
  evil->Send(f);
  ASSERT_TRUE(evil->Expect(proto::Cmd::kInput, &m));
  EXPECT_EQ(m.chunk_status, proto::ChunkStatus::kOk) << m.reason;
  EXPECT_EQ(m.fetch, 999u);
}

// The worker client against a broker written by hand, which serves `bytes` as the input `sha` and can damage what
// it sends.
class FakeInputHost {
 public:
  FakeInputHost() : peer_(RawPeer::Broker()) {}
  std::string endpoint() { return peer_->endpoint(); }
  void Welcome() {
    proto::Message m;
    ASSERT_TRUE(peer_->Expect(proto::Cmd::kHello, &m));
    proto::Message w;
    w.cmd = proto::Cmd::kWelcome;
    w.heartbeat_ms = 1000;
    w.liveness = 3;
    w.session = "fake";
    peer_->Send(w);
  }
  // Answers FETCHes with `bytes` until the fetch ends; `damage(offset, &chunk, &checksum)` may change a chunk.
  // Returns the offsets asked for, in order.
  std::vector<uint64_t> Serve(const std::string& bytes, const std::string& sha,
                              const std::function<void(uint64_t, std::string*, uint32_t*)>& damage, int ms) {
    std::vector<uint64_t> asked;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    proto::Message f;
    while (std::chrono::steady_clock::now() < until) {
      if (!peer_->Recv(&f, 50) || f.cmd != proto::Cmd::kFetch) continue;
      asked.push_back(f.offset);
      uint64_t off = f.offset;
      for (uint32_t i = 0; i < f.count && off < bytes.size(); ++i) {
        proto::Message in;
        in.cmd = proto::Cmd::kInput;
        in.fetch = f.fetch;
        in.file_sha256 = sha;
        in.offset = off;
        in.file_size = bytes.size();
        in.data = bytes.substr(off, proto::kChunkBytes);
        in.chunk_checksum = proto::ChunkChecksum(in.data);
        damage(off, &in.data, &in.chunk_checksum);
        off += in.data.size();
        peer_->Send(in);
      }
    }
    return asked;
  }
  RawPeer& peer() { return *peer_; }

 private:
  std::unique_ptr<RawPeer> peer_;
};

WorkerClient* StartClient(const std::string& endpoint, std::unique_ptr<WorkerClient>* owner) {
  WorkerClientOptions o;
  o.broker = endpoint;
  o.worker_id = "gpu-1";
  o.capabilities_json = kCaps;
  o.heartbeat_ms = 1000;
  EXPECT_TRUE(WorkerClient::Start(o, owner).ok());
  return owner->get();
}

// A job that takes another's output: it waits for that job, is sent with the reference made the stored form of
// the file that job recorded, and its worker fetches that file from the artifact root; a reference to a file the
// job did not make fails the dependent (no retry) instead of running it without its input.
TEST_F(InputTransferTest, AJobTakesAnotherJobsOutputOnceThatOneHasSucceeded) {
  WorkerClient* w = AddWorker("gpu-1", kCaps);
  const uint64_t first = Enqueue(json{{"2", {{"class_type", "SaveImage"}, {"inputs", json::object()}}}}.dump());
  auto takes = [&](const json& spec) {
    json p = {{"1", {{"class_type", "LoadImage"}, {"inputs", {{"image", {{"comfymq_output", spec}}}}}}},
              {"2", {{"class_type", "SaveImage"}, {"inputs", {{"images", {"1", 0}}}}}}};
    NewJob j;
    j.prompt = p.dump();
    j.after = {first};
    EnqueueResult r;
    EXPECT_TRUE(store_->Enqueue(j, &r).ok());
    return r.id;
  };
  const uint64_t by_index = takes({{"job", FormatJobId(first)}, {"index", 1}});
  const uint64_t by_name = takes({{"job", FormatJobId(first)}, {"filename", "b.png"}});
  const uint64_t missing = takes({{"job", FormatJobId(first)}, {"filename", "nope.png"}});
  std::vector<std::string> why;
  ASSERT_TRUE(broker_->Explain(by_index, &why).ok());
  ASSERT_EQ(why.size(), 1u);
  EXPECT_EQ(why[0].rfind("waits for job " + FormatJobId(first) + " (", 0), 0u) << why[0];  // pending or running

  JobAssignment a;
  ASSERT_TRUE(w->NextJob(5000, &a));
  ASSERT_EQ(a.job_id, first);
  JobAssignment none;
  EXPECT_FALSE(w->NextJob(200, &none)) << "the dependents wait";
  const std::string bytes_a = RandomBytes(1000, 3), bytes_b = RandomBytes(3 * 1024 * 1024 + 7, 4);
  std::filesystem::create_directories(tmp_.Sub("out"));
  std::ofstream(tmp_.Sub("out/a.png"), std::ios::binary) << bytes_a;
  std::ofstream(tmp_.Sub("out/b.png"), std::ios::binary) << bytes_b;
  ASSERT_TRUE(
      w->Complete(a.job_id, a.token, "{}",
                  {{tmp_.Sub("out/a.png"), "a.png", "image/png"}, {tmp_.Sub("out/b.png"), "b.png", "image/png"}})
          .ok());
  ASSERT_TRUE(WaitFor([&] { return Get(first).state == JobState::kSucceeded; }));

  std::set<uint64_t> ran;
  for (int i = 0; i < 2; ++i) {
    JobAssignment d;
    ASSERT_TRUE(w->NextJob(5000, &d));
    ran.insert(d.job_id);
    json p = json::parse(d.prompt_json);
    const json& ref = p["1"]["inputs"]["image"];
    ASSERT_EQ(ref.value("comfymq_input", ""), Sha256::Hex(bytes_b)) << ref.dump();
    EXPECT_EQ(ref.value("name", ""), "b.png");
    EXPECT_EQ(ref.value("size", 0u), bytes_b.size());
    const std::string dest = tmp_.Sub("out/fetched-" + std::to_string(i));
    uint64_t size = 0;
    Status s = w->FetchInput(d.job_id, d.token, Sha256::Hex(bytes_b), dest, 10000, &size);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(ReadFile(dest), bytes_b);
    // The other file of that job is not this job's to fetch.
    s = w->FetchInput(d.job_id, d.token, Sha256::Hex(bytes_a), dest + ".a", 5000, &size);
    EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
    ASSERT_TRUE(w->Complete(d.job_id, d.token, "{}", {}).ok());
  }
  EXPECT_EQ(ran, (std::set<uint64_t>{by_index, by_name}));
  ASSERT_TRUE(WaitFor([&] { return Get(missing).state == JobState::kFailed; }));
  json err = json::parse(Get(missing).error);
  EXPECT_EQ(err.value("type", ""), "input_error");
  EXPECT_NE(err.value("message", "").find("made no output file named nope.png"), std::string::npos) << err.dump();
  EXPECT_EQ(Get(missing).attempts, 1);
}

TEST(InputFetchTest, ADamagedChunkIsAskedForAgainAndTheFileArrivesWhole) {
  ::comfymq::testing::TempDir tmp;
  FakeInputHost host;
  std::unique_ptr<WorkerClient> owner;
  WorkerClient* w = StartClient(host.endpoint(), &owner);
  host.Welcome();
  const std::string bytes = RandomBytes(5 * proto::kChunkBytes + 77, 4);
  const std::string sha = Sha256::Hex(bytes);
  Status result;
  uint64_t size = 0;
  std::thread fetcher([&] { result = w->FetchInput(1, 1, sha, tmp.path() + "/in", 20000, &size); });
  bool damaged = false;
  auto asked = host.Serve(
      bytes, sha,
      [&](uint64_t off, std::string* data, uint32_t*) {
        if (off == 2 * proto::kChunkBytes && !damaged) {
          damaged = true;
          (*data)[10] ^= 0x5a;  // flipped on the way: its checksum no longer matches
        }
      },
      1500);
  fetcher.join();
  ASSERT_TRUE(result.ok()) << result.ToString();
  EXPECT_EQ(size, bytes.size());
  EXPECT_TRUE(ReadFile(tmp.path() + "/in") == bytes);
  ASSERT_TRUE(damaged);
  // Asked from 0, then again from the damaged chunk's offset.
  EXPECT_EQ(asked.front(), 0u);
  EXPECT_NE(std::find(asked.begin(), asked.end(), 2 * proto::kChunkBytes), asked.end());
}

TEST(InputFetchTest, AFileThatHashesWrongIsFetchedOnceMoreThenRefusedAndNothingIsKept) {
  ::comfymq::testing::TempDir tmp;
  FakeInputHost host;
  std::unique_ptr<WorkerClient> owner;
  WorkerClient* w = StartClient(host.endpoint(), &owner);
  host.Welcome();
  const std::string bytes = RandomBytes(3 * proto::kChunkBytes, 5);
  const std::string sha = Sha256::Hex("what was asked for");  // the host's copy is not it (checksums are right)
  Status result;
  uint64_t size = 0;
  std::thread fetcher([&] { result = w->FetchInput(1, 1, sha, tmp.path() + "/in", 20000, &size); });
  auto asked = host.Serve(bytes, sha, [](uint64_t, std::string*, uint32_t*) {}, 1500);
  fetcher.join();
  EXPECT_TRUE(result.IsIOError()) << result.ToString();
  EXPECT_NE(result.message().find("another sha256"), std::string::npos) << result.ToString();
  EXPECT_EQ(std::count(asked.begin(), asked.end(), 0u), 2);  // the whole file twice
  for (const auto& e : std::filesystem::directory_iterator(tmp.path())) ADD_FAILURE() << "left: " << e.path();
}

TEST(InputFetchTest, ALostLinkEndsAFetchAtOnce) {
  ::comfymq::testing::TempDir tmp;
  auto host = std::make_unique<FakeInputHost>();
  std::unique_ptr<WorkerClient> owner;
  WorkerClient* w = StartClient(host->endpoint(), &owner);
  host->Welcome();
  const std::string sha = Sha256::Hex("x");
  Status result;
  uint64_t size = 0;
  const auto start = std::chrono::steady_clock::now();
  std::thread fetcher([&] { result = w->FetchInput(1, 1, sha, tmp.path() + "/in", 60000, &size); });
  proto::Message f;
  ASSERT_TRUE(host->peer().Expect(proto::Cmd::kFetch, &f));
  host.reset();  // the host goes silent: after its liveness (3 s) the worker drops the link, and the fetch
  fetcher.join();
  EXPECT_TRUE(result.IsIOError()) << result.ToString();
  EXPECT_NE(result.message().find("link to the host was lost"), std::string::npos) << result.ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));  // not the 60 s timeout
  for (const auto& e : std::filesystem::directory_iterator(tmp.path())) ADD_FAILURE() << "left: " << e.path();
}

}  // namespace
}  // namespace comfymq
