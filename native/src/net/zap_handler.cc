#include "net/zap_handler.h"

#include <vector>

#include "net/zmq_frames.h"
#include "util/process.h"

namespace comfymq::net {

ZapHandler::ZapHandler(zmq::context_t* ctx, DeniedFn on_denied)
    : socket_(*ctx, zmq::socket_type::rep), on_denied_(std::move(on_denied)) {}

Status ZapHandler::Start(zmq::context_t* ctx, const std::vector<std::string>& keys, DeniedFn on_denied,
                         std::unique_ptr<ZapHandler>* out) {
  std::unique_ptr<ZapHandler> h(new ZapHandler(ctx, std::move(on_denied)));
  CMQ_RETURN_IF_ERROR(h->SetAllowed(keys));
  try {
    h->socket_.set(zmq::sockopt::linger, 0);
    h->socket_.bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    return Status::IOError(std::string("cannot start the ZAP handler: ") + e.what());
  }
  h->thread_ = std::thread(&ZapHandler::Loop, h.get());
  *out = std::move(h);
  return Status::OK();
}

Status ZapHandler::SetAllowed(const std::vector<std::string>& keys) {
  std::set<std::string> next;
  for (const std::string& k : keys) {
    uint8_t bin[32];
    if (k.size() != 40 || zmq_z85_decode(bin, k.c_str()) == nullptr) {
      return Status::InvalidArgument("allowed worker key '" + k.substr(0, 64) +
                                     "' is not a 40-character Z85 CURVE key");
    }
    next.insert(std::string(reinterpret_cast<char*>(bin), 32));
  }
  std::lock_guard<std::mutex> l(mu_);
  allowed_.swap(next);
  return Status::OK();
}

ZapHandler::~ZapHandler() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void ZapHandler::Loop() {
  NameThisThread("cmq-zap");
  // Request: version, request id, domain, address, identity, mechanism, credentials...
  // Reply:   version, request id, status code, status text, user id, metadata.
  while (!stop_) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(&item, 1, std::chrono::milliseconds(100));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      std::vector<std::string> req;
      if (!RecvFrames(socket_, &req)) continue;
      std::string code = "400", text = "not allowed", user;
      if (req.size() >= 7 && req[0] == "1.0" && req[5] == "CURVE" && req[6].size() == 32) {
        bool allowed;
        {
          std::lock_guard<std::mutex> l(mu_);
          allowed = allowed_.count(req[6]) != 0;
        }
        if (allowed) {
          char z85[41];
          zmq_z85_encode(z85, reinterpret_cast<const uint8_t*>(req[6].data()), 32);
          code = "200";
          text = "OK";
          user = z85;
        } else if (on_denied_) {
          char z85[41];
          zmq_z85_encode(z85, reinterpret_cast<const uint8_t*>(req[6].data()), 32);
          on_denied_(z85, req[3]);
        }
      }
      std::vector<std::string> reply = {
          req.size() > 0 ? req[0] : "1.0", req.size() > 1 ? req[1] : "", code, text, user, ""};
      // A REP socket must answer before it can read again; a failed answer is dropped by libzmq.
      for (size_t i = 0; i < reply.size(); ++i) {
        socket_.send(zmq::buffer(reply[i]), i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
      }
    } catch (const zmq::error_t&) {
      if (stop_) return;  // context terminating
    }
  }
}

}  // namespace comfymq::net
