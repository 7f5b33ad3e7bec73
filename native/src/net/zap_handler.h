// ZapHandler: the ZeroMQ authentication (ZAP, RFC 27) handler of a broker context. It admits CURVE clients
// whose public key is on the allow list and nobody else, on its own thread. A refused key is counted and
// reported (rate-limited) through `on_denied`, called on the handler's thread.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "comfymq/status.h"

namespace comfymq::net {

class ZapHandler {
 public:
  using DeniedFn = std::function<void(const std::string& key_z85, const std::string& address)>;

  // Binds inproc://zeromq.zap.01 in `ctx`; must happen before the server socket binds.
  static Status Start(zmq::context_t* ctx, const std::vector<std::string>& allowed_keys_z85, DeniedFn on_denied,
                      std::unique_ptr<ZapHandler>* out);
  ~ZapHandler();
  // Replaces the allow list (every key checked first: InvalidArgument changes nothing). Thread-safe.
  Status SetAllowed(const std::vector<std::string>& keys_z85);

 private:
  ZapHandler(zmq::context_t* ctx, DeniedFn on_denied);
  void Loop();

  zmq::socket_t socket_;
  std::mutex mu_;
  std::set<std::string> allowed_;  // 32-byte binary keys, under mu_
  DeniedFn on_denied_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace comfymq::net
