// The broker and the worker client against hostile and buggy peers, over real ZeroMQ sockets on 127.0.0.1:
// lease-bound messages from a connection that does not hold the lease, HELLOs that try to take another worker's
// id (plain text and CURVE), malformed HELLOs, a job the worker cannot read, retries that go elsewhere first, and
// runs past the host's time limit. Each test says what an attacker (or a bug) tried and checks nothing changed.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cluster_fixture.h"
#include "comfymq/curve.h"
#include "comfymq/job.h"
#include "net/protocol.h"

namespace comfymq {
namespace {

const std::string kCaps = Caps({"EmptyImage", "SaveImage"});

std::string Nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// A job an older host could have stored (before the depth limit): the node's input nests `depth` levels.
std::string DeepGraph(int depth) {
  return R"({"1": {"class_type": "EmptyImage", "inputs": {"x": )" + Nested(depth) + "}}}";
}

class BrokerSafetyTest : public ClusterTest {
 protected:
  // A raw worker that said HELLO as `id` and was welcomed.
  std::unique_ptr<RawPeer> Intruder(const std::string& id) {
    auto p = RawPeer::Worker(endpoint_);
    p->Send(RawPeer::Hello(id, kCaps));
    proto::Message m;
    EXPECT_TRUE(p->Expect(proto::Cmd::kWelcome, &m)) << "the intruder should be let in as " << id;
    return p;
  }
  json WorkerView(const std::string& id) {
    for (const json& w : json::parse(broker_->WorkersJson())) {
      if (w["id"] == id) return w;
    }
    return nullptr;
  }
};

proto::Message LeaseMessage(proto::Cmd cmd, uint64_t job, uint64_t token) {
  proto::Message m;
  m.cmd = cmd;
  m.job_id = job;
  m.token = token;
  if (cmd == proto::Cmd::kResult) m.json = R"({"9": {"forged": true}})";
  if (cmd == proto::Cmd::kFail) m.json = R"({"type": "forged", "message": "the attacker's error"})";
  if (cmd == proto::Cmd::kProgress) m.json = R"({"node": "forged"})";
  if (cmd == proto::Cmd::kChunk) {
    m.file_index = 0;
    m.file_name = "evil.png";
    m.data = "x";
    m.file_size = 1;
    m.chunk_checksum = proto::ChunkChecksum(m.data);
  }
  return m;
}

TEST_F(BrokerSafetyTest, LeaseMessagesFromAConnectionThatDoesNotHoldTheLeaseChangeNothing) {
  WorkerClient* real = AddWorker("gpu-1", kCaps);
  const uint64_t id = Enqueue(Graph());
  JobAssignment a;
  ASSERT_TRUE(real->NextJob(5000, &a));
  ASSERT_TRUE(real->Progress(a.job_id, a.token, R"({"node": "real"})").ok());
  ASSERT_TRUE(WaitFor([&] { return Get(id).progress.find("real") != std::string::npos; }));
  auto evil = Intruder("evil");
  // The attacker knows the right token (the worst case: tokens cannot be guessed, see TokenCodec) and replays
  // wrong ones too.
  for (uint64_t token : {a.token, a.token + 1, a.token - 1, uint64_t{1}}) {
    for (proto::Cmd cmd :
         {proto::Cmd::kResult, proto::Cmd::kFail, proto::Cmd::kProgress, proto::Cmd::kCancelled, proto::Cmd::kChunk}) {
      evil->Send(LeaseMessage(cmd, id, token));
    }
  }
  proto::Message m;
  ASSERT_TRUE(evil->Expect(proto::Cmd::kNack, &m)) << "a refused result is answered, so an honest sender stops";
  EXPECT_NE(m.reason.find("does not hold"), std::string::npos) << m.reason;
  ASSERT_TRUE(WaitFor([&] { return broker_->Counters().foreign_lease_messages >= 20; }))
      << broker_->Counters().foreign_lease_messages;
  Job j = Get(id);
  EXPECT_EQ(j.state, JobState::kRunning);
  EXPECT_EQ(j.worker_id, "gpu-1");
  EXPECT_EQ(j.attempts, 1);
  EXPECT_NE(j.progress.find("real"), std::string::npos) << "forged progress must not replace the real one";
  EXPECT_FALSE(std::filesystem::exists(tmp_.Sub("artifacts/" + FormatJobId(id) + "/evil.png")));
  EXPECT_EQ(WorkerView("gpu-1")["running"], json::array({FormatJobId(id)}));
  // The real worker's result is recorded.
  ASSERT_TRUE(real->Complete(a.job_id, a.token, R"({"9": {"real": true}})", {}).ok());
  ASSERT_FALSE(NextWorkerEvent(real, "ack").is_null());
  j = Get(id);
  EXPECT_EQ(j.state, JobState::kSucceeded);
  EXPECT_NE(j.outputs.find("real"), std::string::npos);
  EXPECT_EQ(j.outputs.find("forged"), std::string::npos);
}

TEST_F(BrokerSafetyTest, AResultSentAgainByTheWorkerThatRanTheJobIsStillRecognised) {
  // The held check must not break resends: the worker that ran the job last sends the same result again (its
  // ACK was lost) and hears "duplicate", while the record stays as it was.
  auto w = RawPeer::Worker(endpoint_);
  w->Send(RawPeer::Hello("gpu-1", kCaps));
  proto::Message m;
  ASSERT_TRUE(w->Expect(proto::Cmd::kWelcome, &m));
  proto::Message ready;
  ready.cmd = proto::Cmd::kReady;
  ready.credit = 1;
  w->Send(ready);
  const uint64_t id = Enqueue(Graph());
  proto::Message job;
  ASSERT_TRUE(w->Expect(proto::Cmd::kJob, &job));
  ASSERT_EQ(job.job_id, id);
  proto::Message result = LeaseMessage(proto::Cmd::kResult, id, job.token);
  result.json = R"({"9": {"first": true}})";
  w->Send(result);
  ASSERT_TRUE(w->Expect(proto::Cmd::kAck, &m));
  EXPECT_EQ(m.ack, proto::AckKind::kRecorded);
  result.json = R"({"9": {"second": true}})";
  w->Send(result);
  ASSERT_TRUE(w->Expect(proto::Cmd::kAck, &m));
  EXPECT_EQ(m.ack, proto::AckKind::kDuplicate);
  Job j = Get(id);
  EXPECT_EQ(j.state, JobState::kSucceeded);
  EXPECT_NE(j.outputs.find("first"), std::string::npos);
  EXPECT_EQ(broker_->Counters().foreign_lease_messages, 0u);
}

TEST_F(BrokerSafetyTest, AHelloNamingALiveWorkerFromAnotherConnectionIsRefusedAndChangesNothing) {
  WorkerClient* real = AddWorker("gpu-1", kCaps);
  const uint64_t id = Enqueue(Graph());
  JobAssignment a;
  ASSERT_TRUE(real->NextJob(5000, &a));
  // Four HELLOs used to dead-letter the job (each released its lease, counting an attempt).
  for (int i = 0; i < 4; ++i) {
    auto evil = RawPeer::Worker(endpoint_);
    evil->Send(RawPeer::Hello("gpu-1", kCaps));
    proto::Message m;
    ASSERT_TRUE(evil->Expect(proto::Cmd::kRefuse, &m)) << "try " << i;
    EXPECT_NE(m.reason.find("another link"), std::string::npos) << m.reason;
  }
  Job j = Get(id);
  EXPECT_EQ(j.state, JobState::kRunning);
  EXPECT_EQ(j.attempts, 1);
  EXPECT_TRUE(WorkerView("gpu-1")["online"].get<bool>());
  ASSERT_TRUE(real->Complete(a.job_id, a.token, "{}", {}).ok());
  ASSERT_FALSE(NextWorkerEvent(real, "ack").is_null()) << "the real worker's link was left alone";
  EXPECT_EQ(Get(id).state, JobState::kSucceeded);
}

TEST_F(BrokerSafetyTest, AWorkerWhoseIdIsStillConnectedTriesAgainSoonAndJoinsOnceTheOldLinkIsGone) {
  WorkerClient* old_link = AddWorker("gpu-1", kCaps);
  ASSERT_TRUE(WaitFor([&] { return WorkerView("gpu-1")["online"] == true; }));
  WorkerClientOptions patient;
  patient.reconnect_max_ms = 60000;  // a refusal that stands would keep it away this long
  WorkerClient* new_link = AddWorker("gpu-1", kCaps, 1, &patient);
  json refused = NextWorkerEvent(new_link, "refused");
  ASSERT_FALSE(refused.is_null());
  EXPECT_NE(refused["reason"].get<std::string>().find("busy:"), std::string::npos) << refused;
  EXPECT_LT(refused["retry_in"].get<double>(), 5.0) << refused;
  old_link->Stop(false).IgnoreError();  // gone without a BYE: the broker lets it go after `liveness` heartbeats
  ASSERT_FALSE(NextWorkerEvent(new_link, "connected", 10000).is_null());
  const uint64_t id = Enqueue(Graph());
  JobAssignment a;
  ASSERT_TRUE(new_link->NextJob(5000, &a));
  EXPECT_EQ(a.job_id, id);
}

TEST_F(BrokerSafetyTest, AHelloThatNamesEveryLeaseOfTheWorkerProvesItIsThatWorker) {
  // A worker whose link died on its side reconnects before the broker noticed: it names the leases it holds
  // (tokens nobody else knows) and takes its place again, keeping them.
  WorkerClient* real = AddWorker("gpu-1", kCaps);
  const uint64_t id = Enqueue(Graph());
  JobAssignment a;
  ASSERT_TRUE(real->NextJob(5000, &a));
  auto again = RawPeer::Worker(endpoint_);
  again->Send(RawPeer::Hello("gpu-1", kCaps, {{a.job_id, a.token}}));
  proto::Message m;
  ASSERT_TRUE(again->Expect(proto::Cmd::kWelcome, &m));
  ASSERT_EQ(m.held.size(), 1u);
  EXPECT_EQ(m.held[0].job_id, id);
  EXPECT_EQ(Get(id).state, JobState::kRunning);
  EXPECT_EQ(Get(id).attempts, 1);
}

TEST_F(BrokerSafetyTest, NamingOneLeaseTwiceProvesNothing) {
  WorkerClient* real = AddWorker("gpu-1", kCaps, 2);
  Enqueue(Graph());
  Enqueue(Graph());
  JobAssignment a, b;
  ASSERT_TRUE(real->NextJob(5000, &a));
  ASSERT_TRUE(real->NextJob(5000, &b));
  // A thief that learned one of the two tokens names it twice.
  auto thief = RawPeer::Worker(endpoint_);
  thief->Send(RawPeer::Hello("gpu-1", kCaps, {{a.job_id, a.token}, {a.job_id, a.token}}));
  proto::Message m;
  ASSERT_TRUE(thief->Expect(proto::Cmd::kRefuse, &m));
  EXPECT_EQ(m.reason.rfind("busy:", 0), 0u) << m.reason;
  EXPECT_EQ(Get(b.job_id).state, JobState::kRunning);
  EXPECT_EQ(Get(b.job_id).attempts, 1);
}

TEST_F(BrokerSafetyTest, CapabilitiesAreSharedAndHeldToABudget) {
  broker_.reset();
  BrokerOptions bo;
  bo.max_capabilities_bytes = 64 << 10;
  bo.capabilities_budget_bytes = 200 << 10;  // three distinct 60 KB sets fit, a fourth does not
  StartBroker("tcp://127.0.0.1:*", &bo);
  auto big = [](int n) {
    std::string classes;
    for (int i = 0; classes.size() < (60 << 10); ++i)
      classes += (i ? ",\"" : "\"") + std::to_string(n) + "-" + std::to_string(i) + "\"";
    return R"({"node_classes": [)" + classes + "]}";
  };
  std::vector<std::unique_ptr<RawPeer>> peers;
  auto hello = [&](const std::string& id, const std::string& caps, proto::Cmd want) {
    peers.push_back(RawPeer::Worker(endpoint_));
    peers.back()->Send(RawPeer::Hello(id, caps));
    proto::Message m;
    EXPECT_TRUE(peers.back()->Expect(want, &m)) << id;
    return m.reason;
  };
  for (int i = 0; i < 3; ++i) hello("w" + std::to_string(i), big(i), proto::Cmd::kWelcome);
  for (int i = 0; i < 5; ++i) hello("same" + std::to_string(i), big(0), proto::Cmd::kWelcome);  // shared: free
  EXPECT_NE(hello("w3", big(3), proto::Cmd::kRefuse).find("busy:"), std::string::npos);
  EXPECT_NE(hello("huge", R"({"node_classes": [")" + std::string(70 << 10, 'k') + R"("]})", proto::Cmd::kRefuse)
                .find("too large"),
            std::string::npos);
}

TEST_F(BrokerSafetyTest, UnderCurveAWorkersIdAndLeasesBelongToItsKey) {
  if (!CurveAvailable()) GTEST_SKIP() << "libzmq without CURVE";
  std::string bpub, bsec, pub1, sec1, pub2, sec2;
  ASSERT_TRUE(MakeCurveKeyPair(&bpub, &bsec).ok());
  ASSERT_TRUE(MakeCurveKeyPair(&pub1, &sec1).ok());
  ASSERT_TRUE(MakeCurveKeyPair(&pub2, &sec2).ok());
  broker_.reset();
  BrokerOptions bo;
  bo.curve_secret_key = bsec;
  bo.allowed_worker_keys = {pub1, pub2};
  bo.worker_keys_path = tmp_.Sub("worker-keys");
  StartBroker("tcp://127.0.0.1:*", &bo);
  WorkerClientOptions o1;
  o1.broker_public_key = bpub;
  o1.public_key = pub1;
  o1.secret_key = sec1;
  WorkerClient* w1 = AddWorker("gpu-1", kCaps, 1, &o1);
  const uint64_t id = Enqueue(Graph());
  JobAssignment a;
  ASSERT_TRUE(w1->NextJob(5000, &a));

  // Key 2, allowed, as itself: its RESULT for key 1's job is refused.
  auto k2 = RawPeer::Worker(endpoint_, bpub, pub2, sec2);
  k2->Send(RawPeer::Hello("gpu-2", kCaps));
  proto::Message m;
  ASSERT_TRUE(k2->Expect(proto::Cmd::kWelcome, &m));
  k2->Send(LeaseMessage(proto::Cmd::kResult, id, a.token));
  ASSERT_TRUE(k2->Expect(proto::Cmd::kNack, &m));
  // Key 2 naming key 1's worker id: refused (online or not), nothing changes.
  auto k2b = RawPeer::Worker(endpoint_, bpub, pub2, sec2);
  k2b->Send(RawPeer::Hello("gpu-1", kCaps, {{a.job_id, a.token}}));
  ASSERT_TRUE(k2b->Expect(proto::Cmd::kRefuse, &m));
  EXPECT_NE(m.reason.find("another worker's key"), std::string::npos) << m.reason;
  Job j = Get(id);
  EXPECT_EQ(j.state, JobState::kRunning);
  EXPECT_EQ(j.attempts, 1);
  EXPECT_EQ(WorkerView("gpu-1")["key"], pub1);

  // The binding outlasts a broker restart: with gpu-1 gone, key 2 still cannot take its id.
  w1->Stop(false).IgnoreError();
  broker_.reset();
  StartBroker("tcp://127.0.0.1:*", &bo);
  auto k2c = RawPeer::Worker(endpoint_, bpub, pub2, sec2);
  k2c->Send(RawPeer::Hello("gpu-1", kCaps));
  ASSERT_TRUE(k2c->Expect(proto::Cmd::kRefuse, &m));
  EXPECT_NE(m.reason.find("another worker's key"), std::string::npos) << m.reason;
  EXPECT_EQ(Get(id).attempts, 1) << "the refused HELLO released none of gpu-1's leases";
  // Key 1 is welcomed back and keeps its job.
  auto k1 = RawPeer::Worker(endpoint_, bpub, pub1, sec1);
  k1->Send(RawPeer::Hello("gpu-1", kCaps, {{a.job_id, a.token}}));
  ASSERT_TRUE(k1->Expect(proto::Cmd::kWelcome, &m));
  ASSERT_EQ(m.held.size(), 1u);

  // A key that used many ids (fresh data directories, autoscaled containers) forgets its least recently used
  // offline one instead of being refused for good.
  for (int i = 0; i < 70; ++i) {
    auto p = RawPeer::Worker(endpoint_, bpub, pub2, sec2);
    p->Send(RawPeer::Hello("fleet-" + std::to_string(i), kCaps));
    ASSERT_TRUE(p->Expect(proto::Cmd::kWelcome, &m)) << i;
    p->Send(proto::Message{proto::Cmd::kBye});
  }
  // A key taken off the allow list frees its ids: key 2 may use gpu-1 once key 1 is no longer allowed.
  broker_.reset();
  bo.allowed_worker_keys = {pub2};
  StartBroker("tcp://127.0.0.1:*", &bo);
  auto k2d = RawPeer::Worker(endpoint_, bpub, pub2, sec2);
  k2d->Send(RawPeer::Hello("gpu-1", kCaps));
  EXPECT_TRUE(k2d->Expect(proto::Cmd::kWelcome, &m));
}

TEST_F(BrokerSafetyTest, EveryMalformedHelloIsAnsweredWithAReason) {
  auto body = [](const proto::Message& m) { return proto::Encode(m); };
  std::vector<std::pair<std::string, std::vector<std::string>>> variants;
  auto with = [&](const std::string& name, const std::function<void(proto::Message&)>& edit) {
    proto::Message m = RawPeer::Hello("w", kCaps);
    edit(m);
    variants.emplace_back(name, body(m));
  };
  with("empty id", [](proto::Message& m) { m.worker_id = ""; });
  with("id too long", [](proto::Message& m) { m.worker_id = std::string(300, 'a'); });
  with("control character in id", [](proto::Message& m) { m.worker_id = "a\nb"; });
  with("capacity 0", [](proto::Message& m) { m.capacity = 0; });
  with("capacity 5000", [](proto::Message& m) { m.capacity = 5000; });
  with("info not JSON", [](proto::Message& m) { m.info_json = "{nope"; });
  with("capabilities not JSON", [](proto::Message& m) { m.caps_json = "[1,"; });
  with("capabilities too deep", [](proto::Message& m) { m.caps_json = "{\"a\": " + Nested(80) + "}"; });
  with("capabilities of the wrong shape", [](proto::Message& m) { m.caps_json = R"({"node_classes": 5})"; });
  with("capabilities too large",
       [](proto::Message& m) { m.caps_json = R"({"node_classes": [")" + std::string(9u << 20, 'K') + R"("]})"; });
  with("info too large", [](proto::Message& m) { m.info_json = R"({"x": ")" + std::string(100000, 'i') + R"("})"; });
  {
    std::vector<std::string> f = body(RawPeer::Hello("w", kCaps));
    f[1].resize(f[1].size() - 3);
    variants.emplace_back("truncated body", f);
  }
  {
    std::vector<std::string> f = body(RawPeer::Hello("w", kCaps));
    f[1] += "xyz";
    variants.emplace_back("trailing bytes", f);
  }
  {
    std::vector<std::string> f = body(RawPeer::Hello("w", kCaps));
    f[0][4] = 9;  // another protocol version
    variants.emplace_back("other version", f);
  }
  for (const auto& [name, frames] : variants) {
    auto peer = RawPeer::Worker(endpoint_);
    peer->SendFrames(frames);
    proto::Message m;
    ASSERT_TRUE(peer->Expect(proto::Cmd::kRefuse, &m, 3000)) << name << ": no answer";
    EXPECT_FALSE(m.reason.empty()) << name;
  }
  WorkerClient* good = AddWorker("gpu-1", kCaps);
  Enqueue(Graph());
  JobAssignment a;
  EXPECT_TRUE(good->NextJob(5000, &a)) << "the broker keeps serving";
}

TEST_F(BrokerSafetyTest, HelloFloodsOfNewIdsAreBoundedAndForgotten) {
  broker_.reset();
  BrokerOptions bo;
  bo.max_workers = 3;
  StartBroker("tcp://127.0.0.1:*", &bo);
  std::vector<std::unique_ptr<RawPeer>> peers;
  for (int i = 0; i < 3; ++i) peers.push_back(Intruder("flood-" + std::to_string(i)));
  auto one_more = RawPeer::Worker(endpoint_);
  one_more->Send(RawPeer::Hello("flood-3", kCaps));
  proto::Message m;
  ASSERT_TRUE(one_more->Expect(proto::Cmd::kRefuse, &m));
  EXPECT_NE(m.reason.find("at most 3"), std::string::npos) << m.reason;
  // Silent ones go offline; new ids then get in, and what is remembered stays within twice the limit.
  for (int i = 4; i < 20; ++i) {
    ASSERT_TRUE(WaitFor(
        [&] {
          auto p = RawPeer::Worker(endpoint_);
          p->Send(RawPeer::Hello("flood-" + std::to_string(i), kCaps));
          proto::Message answer;
          return p->Expect(proto::Cmd::kWelcome, &answer, 300);
        },
        5000))
        << i;
  }
  EXPECT_LE(json::parse(broker_->WorkersJson()).size(), 6u);
}

TEST(WorkerSafety, AJobTheWorkerCannotReadFailsWithTheReasonAndTheWorkerGoesOn) {
  auto broker = RawPeer::Broker();
  WorkerClientOptions o;
  o.broker = broker->endpoint();
  o.worker_id = "gpu-1";
  o.capabilities_json = kCaps;
  o.heartbeat_ms = 1000;
  std::unique_ptr<WorkerClient> w;
  ASSERT_TRUE(WorkerClient::Start(o, &w).ok());
  proto::Message m;
  ASSERT_TRUE(broker->Expect(proto::Cmd::kHello, &m));
  proto::Message welcome;
  welcome.cmd = proto::Cmd::kWelcome;
  welcome.heartbeat_ms = 60000;  // this broker sends no PINGs: the worker must not give up on it meanwhile
  welcome.liveness = 3;
  welcome.session = "s";
  broker->Send(welcome);
  ASSERT_TRUE(broker->Expect(proto::Cmd::kReady, &m));

  const std::vector<std::string> unreadable = {DeepGraph(10000), DeepGraph(kMaxJsonDepth),
                                               R"({"1": {"class_type": "Empty\u0007Image", "inputs": {}}})", "[1, 2]"};
  // Sends a job; returns the FAIL it gets and whether a READY came with it (the slot freed).
  auto run = [&](uint64_t id, const std::string& prompt, proto::Message* fail, bool* freed) {
    proto::Message j;
    j.cmd = proto::Cmd::kJob;
    j.job_id = id;
    j.token = 7;
    j.attempt = 1;
    j.prompt_json = prompt;
    broker->Send(j);
    bool failed = false;
    *freed = false;
    proto::Message got;
    while ((!failed || !*freed) && broker->Recv(&got, 3000)) {
      if (got.cmd == proto::Cmd::kFail) {
        *fail = got;
        failed = true;
      }
      *freed |= got.cmd == proto::Cmd::kReady;
    }
    return failed;
  };
  uint64_t job = 100;
  for (const std::string& prompt : unreadable) {
    proto::Message fail;
    bool freed = false;
    ASSERT_TRUE(run(++job, prompt, &fail, &freed)) << prompt.substr(0, 60);
    EXPECT_TRUE(freed) << "its slot is free again";
    EXPECT_EQ(fail.job_id, job);
    EXPECT_EQ(fail.token, 7u);
    EXPECT_FALSE(fail.retryable);
    json error = json::parse(fail.json);
    EXPECT_EQ(error["type"], "invalid_job");
    EXPECT_NE(error["message"].get<std::string>().find("gpu-1"), std::string::npos) << error;
    if (prompt.size() > 100) {
      EXPECT_NE(fail.json.find(std::to_string(kMaxJsonDepth)), std::string::npos) << "the reason names the limit";
    }
  }
  JobAssignment a;
  EXPECT_FALSE(w->NextJob(100, &a)) << "no unreadable job reaches the caller";
  proto::Message good;
  good.cmd = proto::Cmd::kJob;
  good.job_id = 999;
  good.token = 9;
  good.prompt_json = Graph();
  broker->Send(good);
  ASSERT_TRUE(w->NextJob(3000, &a)) << "the worker keeps serving";
  EXPECT_EQ(a.job_id, 999u);
  w->Stop(false).IgnoreError();
}

TEST_F(BrokerSafetyTest, ARetryGoesToAnotherCapableWorkerFirst) {
  // gpu-a has a free slot all along (capacity 2) and comes first in every dispatch pass: without the preference
  // it would get its failed job straight back.
  WorkerClient* a_worker = AddWorker("gpu-a", kCaps, 2);
  const uint64_t first = Enqueue(Graph(), 3);
  JobAssignment a;
  ASSERT_TRUE(a_worker->NextJob(5000, &a));
  ASSERT_EQ(a.job_id, first);
  WorkerClient* b_worker = AddWorker("gpu-b", kCaps);
  ASSERT_TRUE(WaitFor([&] { return WorkerView("gpu-b")["credit"] == 1; }));
  // The job fails on gpu-a (a model file it cannot load).
  ASSERT_TRUE(a_worker->Fail(a.job_id, a.token, R"({"type": "load_error", "message": "bad model file"})", true).ok());
  JobAssignment again;
  ASSERT_TRUE(b_worker->NextJob(5000, &again)) << "gpu-b, free and not yet tried, should run the retry";
  EXPECT_EQ(again.job_id, first);
  EXPECT_FALSE(a_worker->NextJob(200, &again));
  // The record shows each attempt's worker and error.
  ASSERT_TRUE(
      b_worker->Fail(first, Get(first).lease_token, R"({"type": "load_error", "message": "also bad"})", true).ok());
  ASSERT_TRUE(WaitFor([&] { return json::parse(Get(first).history).size() == 2; }));
  json history = json::parse(Get(first).history);
  EXPECT_EQ(history[0]["worker"], "gpu-a");
  EXPECT_NE(history[0]["error"].dump().find("bad model file"), std::string::npos) << history;
  EXPECT_EQ(history[1]["worker"], "gpu-b");
  EXPECT_NE(history[1]["error"].dump().find("also bad"), std::string::npos) << history;
  // Both tried it: the next run goes to whoever is free.
  JobAssignment third;
  ASSERT_TRUE(WaitFor([&] { return a_worker->NextJob(10, &third) || b_worker->NextJob(10, &third); }))
      << JobStateName(Get(first).state) << " on " << Get(first).worker_id << ", attempts " << Get(first).attempts;
  EXPECT_EQ(third.job_id, first);
}

TEST_F(BrokerSafetyTest, ARetryIsNotHeldBackForAWorkerThatIsBusyOrNeverAsksForWork) {
  WorkerClient* a_worker = AddWorker("gpu-a", kCaps);
  const uint64_t id = Enqueue(Graph(), 3);
  JobAssignment a;
  ASSERT_TRUE(a_worker->NextJob(5000, &a));
  // A capable worker that joins and heartbeats but never says READY (wedged, or hostile).
  auto idle = Intruder("never-ready");
  ASSERT_TRUE(a_worker->Fail(a.job_id, a.token, R"({"type": "x", "message": "try again"})", true).ok());
  JobAssignment again;
  ASSERT_TRUE(a_worker->NextJob(5000, &again)) << "the retry waited for a worker that never takes work";
  EXPECT_EQ(again.job_id, id);
}

TEST_F(BrokerSafetyTest, ARunWithoutATimeoutEndsAtTheHostsLimitAndRunsAgainElsewhere) {
  broker_.reset();
  BrokerOptions bo;
  bo.default_run_timeout_ms = 400;
  StartBroker("tcp://127.0.0.1:*", &bo);
  WorkerClient* stuck = AddWorker("gpu-a", kCaps);
  const uint64_t id = Enqueue(Graph());  // no timeout of its own
  JobAssignment a;
  ASSERT_TRUE(stuck->NextJob(5000, &a));
  EXPECT_GT(a.timeout_ms, 0) << "the worker is told the limit";
  EXPECT_LE(a.timeout_ms, 400);
  WorkerClient* other = AddWorker("gpu-b", kCaps);
  // gpu-a heartbeats (its client does) but never finishes: past the limit the run is called back...
  json cancel = NextWorkerEvent(stuck, "cancel", 10000);
  ASSERT_FALSE(cancel.is_null());
  EXPECT_EQ(cancel["token"].get<uint64_t>(), a.token);
  // ... and runs again on the other worker.
  JobAssignment b;
  ASSERT_TRUE(other->NextJob(10000, &b));
  EXPECT_EQ(b.job_id, id);
  json history = json::parse(Get(id).history);
  ASSERT_GE(history.size(), 1u);
  EXPECT_EQ(history[0]["outcome"], "timeout");
  EXPECT_EQ(history[0]["worker"], "gpu-a");
  // A job's own timeout still wins over the host's limit.
  NewJob own;
  own.prompt = Graph();
  own.timeout_ms = 3600 * 1000;
  EnqueueResult r;
  ASSERT_TRUE(store_->Enqueue(own, &r).ok());
  ASSERT_TRUE(other->Complete(b.job_id, b.token, "{}", {}).ok());
  JobAssignment c;
  ASSERT_TRUE(WaitFor([&] { return other->NextJob(10, &c) || stuck->NextJob(10, &c); }, 10000));
  EXPECT_EQ(c.job_id, r.id);
  EXPECT_GT(c.timeout_ms, 3000 * 1000);
}

}  // namespace
}  // namespace comfymq
