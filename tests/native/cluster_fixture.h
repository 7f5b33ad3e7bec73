// The cluster fixture shared by the cluster tests: a store, a broker on tcp://127.0.0.1:* with 50 ms heartbeats,
// worker clients added on demand, and helpers to wait for things and build prompts.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "comfymq/broker.h"
#include "comfymq/store.h"
#include "comfymq/worker_client.h"
#include "net/protocol.h"
#include "net/zmq_frames.h"
#include "test_util.h"

namespace comfymq {
namespace {

using json = nlohmann::json;
using ::comfymq::testing::TempDir;

constexpr int kHeartbeatMs = 50;

bool WaitFor(const std::function<bool()>& done, int timeout_ms = 5000) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

std::string Caps(const std::vector<std::string>& classes, const json& combos = json::object()) {
  return json{{"node_classes", classes}, {"combos", combos}}.dump();
}

std::string Graph(const std::string& ckpt = "") {
  json p = {{"1", {{"class_type", "EmptyImage"}, {"inputs", {{"width", 64}}}}},
            {"2", {{"class_type", "SaveImage"}, {"inputs", {{"images", {"1", 0}}}}}}};
  if (!ckpt.empty()) p["3"] = {{"class_type", "CheckpointLoaderSimple"}, {"inputs", {{"ckpt_name", ckpt}}}};
  return p.dump();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions so;
    so.reopen_lease_grace_ms = 10000;
    ASSERT_TRUE(Store::Open(so, tmp_.Sub("store"), &store_).ok());
    StartBroker();
  }

  void TearDown() override {
    workers_.clear();
    broker_.reset();
    store_.reset();
  }

  void StartBroker(const std::string& bind = "tcp://127.0.0.1:*", BrokerOptions* custom = nullptr) {
    BrokerOptions o = custom ? *custom : BrokerOptions();
    o.bind = bind;
    o.heartbeat_ms = kHeartbeatMs;
    o.liveness = 3;
    o.artifact_root = tmp_.Sub("artifacts");
    Status s = Broker::Start(store_.get(), o, &broker_);
    ASSERT_TRUE(s.ok()) << s.ToString();
    endpoint_ = broker_->endpoint();
  }

  WorkerClient* AddWorker(const std::string& id, const std::string& caps, int capacity = 1,
                          WorkerClientOptions* custom = nullptr) {
    WorkerClientOptions o = custom ? *custom : WorkerClientOptions();
    o.broker = endpoint_;
    o.worker_id = id;
    o.name = id;
    o.capacity = capacity;
    o.capabilities_json = caps;
    o.heartbeat_ms = kHeartbeatMs;
    o.reconnect_min_ms = 20;
    o.reconnect_max_ms = 200;
    std::unique_ptr<WorkerClient> w;
    Status s = WorkerClient::Start(o, &w);
    EXPECT_TRUE(s.ok()) << s.ToString();
    workers_.push_back(std::move(w));
    return workers_.back().get();
  }

  uint64_t Enqueue(const std::string& prompt, int max_attempts = 3) {
    NewJob j;
    j.prompt = prompt;
    j.max_attempts = max_attempts;
    EnqueueResult r;
    EXPECT_TRUE(store_->Enqueue(j, &r).ok());
    return r.id;
  }

  Job Get(uint64_t id) {
    Job j;
    EXPECT_TRUE(store_->Get(id, false, &j).ok());
    return j;
  }

  // Waits for the next worker event of a type; returns it (or null).
  json NextWorkerEvent(WorkerClient* w, const std::string& type, int timeout_ms = 5000) {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    std::string e;
    while (std::chrono::steady_clock::now() < until) {
      if (w->NextEvent(20, &e)) {
        json j = json::parse(e);
        if (j["type"] == type) return j;
      }
    }
    return nullptr;
  }

  TempDir tmp_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Broker> broker_;
  std::string endpoint_;
  std::vector<std::unique_ptr<WorkerClient>> workers_;
};

// A peer written by hand: one DEALER socket (a worker) or ROUTER socket (a broker) speaking CMQP frames
// directly, for forged, replayed and malformed messages that the real clients never send.
class RawPeer {
 public:
  // A worker-side peer connected to `endpoint`; with server_key, under CURVE with the given key pair.
  static std::unique_ptr<RawPeer> Worker(const std::string& endpoint, const std::string& server_key = "",
                                         const std::string& public_key = "", const std::string& secret_key = "") {
    auto p = std::unique_ptr<RawPeer>(new RawPeer(zmq::socket_type::dealer));
    if (!server_key.empty()) {
      p->socket_.set(zmq::sockopt::curve_serverkey, server_key);
      p->socket_.set(zmq::sockopt::curve_publickey, public_key);
      p->socket_.set(zmq::sockopt::curve_secretkey, secret_key);
    }
    p->socket_.connect(endpoint);
    return p;
  }
  // A broker-side peer bound to tcp://127.0.0.1:* (endpoint() says where).
  static std::unique_ptr<RawPeer> Broker() {
    auto p = std::unique_ptr<RawPeer>(new RawPeer(zmq::socket_type::router));
    p->socket_.bind("tcp://127.0.0.1:*");
    return p;
  }
  std::string endpoint() { return socket_.get(zmq::sockopt::last_endpoint); }

  void SendFrames(const std::vector<std::string>& frames) {
    ASSERT_TRUE(net::SendFrames(socket_, routing_id_.empty() ? nullptr : &routing_id_, frames));
  }
  void Send(const proto::Message& m) { SendFrames(proto::Encode(m)); }

  // The next message that decodes, within timeout_ms (a broker-side peer remembers who sent it, to answer).
  bool Recv(proto::Message* m, int timeout_ms = 3000) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    std::vector<std::string> frames;
    while (std::chrono::steady_clock::now() < until) {
      zmq::pollitem_t item = {socket_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(20));
      if (!(item.revents & ZMQ_POLLIN) || !net::RecvFrames(socket_, &frames)) continue;
      size_t from = 0;
      if (routing_) {
        routing_id_ = frames[0];
        from = 1;
      }
      if (proto::Decode(net::Views(frames, from), m).ok()) return true;
    }
    return false;
  }
  // Waits for a message of the given command, skipping others (PINGs); false when none came in time.
  bool Expect(proto::Cmd cmd, proto::Message* m, int timeout_ms = 3000) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < until) {
      const int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count());
      if (Recv(m, std::max(1, left)) && m->cmd == cmd) return true;
    }
    return false;
  }

  static proto::Message Hello(const std::string& worker_id, const std::string& caps,
                              std::vector<proto::Held> held = {}) {
    proto::Message m;
    m.cmd = proto::Cmd::kHello;
    m.worker_id = worker_id;
    m.name = worker_id;
    m.capacity = 1;
    m.info_json = "{}";
    m.caps_json = caps;
    m.held = std::move(held);
    return m;
  }

 private:
  explicit RawPeer(zmq::socket_type type) : socket_(ctx_, type), routing_(type == zmq::socket_type::router) {
    socket_.set(zmq::sockopt::linger, 0);
  }
  zmq::context_t ctx_;
  zmq::socket_t socket_;
  bool routing_;
  std::string routing_id_;
};

}  // namespace
}  // namespace comfymq
