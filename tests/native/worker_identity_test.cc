// Two workers under one worker id (a copied ComfyUI folder or disk image carries user/comfymq/worker_id; or
// both set COMFYMQ_WORKER_ID), over real ZeroMQ sockets: the second is refused once, with a message that names
// the clash and the fix, and the first keeps its link and its job (no lease lost, no attempt spent). A restart
// of the same installation, and a reconnect of the same process, still take the old link's place.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "cluster_fixture.h"
#include "comfymq/curve.h"
#include "comfymq/job.h"
#include "net/protocol.h"

namespace comfymq {
namespace {

const std::string kCaps = Caps({"EmptyImage", "SaveImage"});

class WorkerIdentityTest : public ClusterTest {
 protected:
  json WorkerView(const std::string& id) {
    for (const json& w : json::parse(broker_->WorkersJson())) {
      if (w["id"] == id) return w;
    }
    return nullptr;
  }
  // Counts the events of `type` a worker gives within ms.
  int CountEvents(WorkerClient* w, const std::string& type, int ms) {
    int n = 0;
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    std::string e;
    while (std::chrono::steady_clock::now() < until) {
      if (w->NextEvent(20, &e) && json::parse(e)["type"] == type) n++;
    }
    return n;
  }
  static proto::Message Hello(const std::string& id, const std::string& instance, const std::string& install) {
    proto::Message m = RawPeer::Hello(id, kCaps);
    m.instance = instance;
    m.install = install;
    return m;
  }

  // Two installations as one id, each with `opts` (plain text, or CURVE keys): the second is refused once.
  void TwoInstallationsOneId(WorkerClientOptions opts) {
    opts.install_id = "install-a";
    WorkerClient* first = AddWorker("gpu-1", kCaps, 1, &opts);
    ASSERT_FALSE(NextWorkerEvent(first, "connected").is_null());
    const uint64_t id = Enqueue(Graph());
    JobAssignment a;
    ASSERT_TRUE(first->NextJob(5000, &a));

    opts.install_id = "install-b";
    WorkerClient* copy = AddWorker("gpu-1", kCaps, 1, &opts);  // retries every 200 ms (the fixture's backoff)
    json refused = NextWorkerEvent(copy, "refused");
    ASSERT_FALSE(refused.is_null());
    const std::string reason = refused["reason"];
    EXPECT_NE(reason.find("id clash: worker id gpu-1 is in use"), std::string::npos) << reason;
    EXPECT_NE(reason.find("COMFYMQ_WORKER_ID"), std::string::npos) << reason;
    EXPECT_NE(reason.find("worker_id file"), std::string::npos) << reason;
    EXPECT_EQ(reason.find("install-a"), std::string::npos) << "the other installation's id is not told";
    // It keeps trying (the other may leave), quietly: over a dozen more refusals, not one more event.
    EXPECT_EQ(CountEvents(copy, "refused", 2500), 0);
    EXPECT_GE(broker_->Counters().refused, 5u);
    json state = json::parse(copy->StateJson());
    EXPECT_NE(state["refused"].get<std::string>().find("id clash"), std::string::npos) << state;

    // The first never lost its link or its lease.
    EXPECT_EQ(CountEvents(first, "disconnected", 10), 0);
    EXPECT_TRUE(WorkerView("gpu-1")["online"].get<bool>());
    ASSERT_TRUE(first->Complete(a.job_id, a.token, "{}", {}).ok());
    ASSERT_FALSE(NextWorkerEvent(first, "ack").is_null());
    Job j = Get(id);
    EXPECT_EQ(j.state, JobState::kSucceeded);
    EXPECT_EQ(j.attempts, 1);
    EXPECT_EQ(j.history.find("lease"), std::string::npos) << j.history;

    // Once the first is gone for good, the other one is let in.
    ASSERT_TRUE(first->Stop(true).ok());
    ASSERT_FALSE(NextWorkerEvent(copy, "connected", 10000).is_null());
  }
};

TEST_F(WorkerIdentityTest, ASecondInstallationUnderALiveIdIsRefusedOnceInPlainText) {
  TwoInstallationsOneId(WorkerClientOptions());
}

TEST_F(WorkerIdentityTest, ASecondInstallationUnderALiveIdIsRefusedOnceUnderCurveWithTheSameKey) {
  if (!CurveAvailable()) GTEST_SKIP() << "libzmq without CURVE";
  // A copied folder copies its keys too: the same key, the same id, two installations. Before, each HELLO took
  // the other's place and both flapped for ever, losing leases.
  std::string bpub, bsec, pub, sec;
  ASSERT_TRUE(MakeCurveKeyPair(&bpub, &bsec).ok());
  ASSERT_TRUE(MakeCurveKeyPair(&pub, &sec).ok());
  broker_.reset();
  BrokerOptions bo;
  bo.curve_secret_key = bsec;
  bo.allowed_worker_keys = {pub};
  StartBroker("tcp://127.0.0.1:*", &bo);
  WorkerClientOptions o;
  o.broker_public_key = bpub;
  o.public_key = pub;
  o.secret_key = sec;
  TwoInstallationsOneId(o);
}

TEST_F(WorkerIdentityTest, ARestartOfTheSameInstallationTakesTheOldLinksPlaceUnderCurve) {
  if (!CurveAvailable()) GTEST_SKIP() << "libzmq without CURVE";
  std::string bpub, bsec, pub, sec;
  ASSERT_TRUE(MakeCurveKeyPair(&bpub, &bsec).ok());
  ASSERT_TRUE(MakeCurveKeyPair(&pub, &sec).ok());
  broker_.reset();
  BrokerOptions bo;
  bo.curve_secret_key = bsec;
  bo.allowed_worker_keys = {pub};
  StartBroker("tcp://127.0.0.1:*", &bo);
  WorkerClientOptions o;
  o.broker_public_key = bpub;
  o.public_key = pub;
  o.secret_key = sec;
  o.install_id = "install-a";
  WorkerClient* before = AddWorker("gpu-1", kCaps, 1, &o);
  ASSERT_FALSE(NextWorkerEvent(before, "connected").is_null());
  before->Stop(false).IgnoreError();  // killed: no BYE, the broker still thinks it is online
  WorkerClient* after = AddWorker("gpu-1", kCaps, 1, &o);
  ASSERT_FALSE(NextWorkerEvent(after, "connected", 5000).is_null());
  const json view = WorkerView("gpu-1");
  EXPECT_TRUE(view["online"].get<bool>()) << view;
}

TEST_F(WorkerIdentityTest, TheSameProcessReconnectingTakesItsPlaceAndAnotherInstallationIsAClash) {
  proto::Message m;
  auto a = RawPeer::Worker(endpoint_);
  a->Send(Hello("gpu-1", "proc-1", "install-a"));
  ASSERT_TRUE(a->Expect(proto::Cmd::kWelcome, &m));
  // Its link broke on its side; the same process says HELLO on a new one before the broker noticed.
  auto again = RawPeer::Worker(endpoint_);
  again->Send(Hello("gpu-1", "proc-1", "install-a"));
  ASSERT_TRUE(again->Expect(proto::Cmd::kWelcome, &m));
  // Another process of the same installation, while that link is live: for now ("busy:", tried again soon).
  again->Send(proto::Message{proto::Cmd::kHeartbeat});
  auto restart = RawPeer::Worker(endpoint_);
  restart->Send(Hello("gpu-1", "proc-2", "install-a"));
  ASSERT_TRUE(restart->Expect(proto::Cmd::kRefuse, &m));
  EXPECT_EQ(m.reason.rfind("busy:", 0), 0u) << m.reason;
  // Another installation: a clash, named as such.
  auto copy = RawPeer::Worker(endpoint_);
  copy->Send(Hello("gpu-1", "proc-3", "install-b"));
  ASSERT_TRUE(copy->Expect(proto::Cmd::kRefuse, &m));
  EXPECT_EQ(m.reason.rfind("id clash:", 0), 0u) << m.reason;
  // Guessing is no use: an empty instance proves nothing.
  auto blank = RawPeer::Worker(endpoint_);
  blank->Send(Hello("gpu-1", "", ""));
  ASSERT_TRUE(blank->Expect(proto::Cmd::kRefuse, &m));
  EXPECT_EQ(m.reason.rfind("busy:", 0), 0u) << m.reason;
}

TEST_F(WorkerIdentityTest, InstanceAndInstallTravelInHelloAndOlderHellosStillDecode) {
  proto::Message m = Hello("gpu-1", "proc-1", "install-a");
  std::vector<std::string> frames = proto::Encode(m);
  proto::Message back;
  ASSERT_TRUE(proto::Decode(net::Views(frames, 0), &back).ok());
  EXPECT_EQ(back.instance, "proc-1");
  EXPECT_EQ(back.install, "install-a");
  proto::Message older = RawPeer::Hello("gpu-1", kCaps);  // no trailing fields, as an older worker sends
  frames = proto::Encode(older);
  ASSERT_TRUE(proto::Decode(net::Views(frames, 0), &back).ok());
  EXPECT_EQ(back.instance, "");
  // A control character in either is refused like in any other id.
  m.install = std::string("bad\x01", 4);
  frames = proto::Encode(m);
  EXPECT_FALSE(proto::Decode(net::Views(frames, 0), &back).ok());
}

}  // namespace
}  // namespace comfymq
