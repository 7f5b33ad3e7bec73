// Multipart send and receive, never blocking (the loops poll first), with the frames as strings.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>
#include <vector>
#include <zmq.hpp>

namespace comfymq::net {

// Receives one whole message if one is waiting. The User-Id ZAP gave the peer (its CURVE key) goes to
// *user_id when asked for.
inline bool RecvFrames(zmq::socket_t& s, std::vector<std::string>* frames, std::string* user_id = nullptr) {
  frames->clear();
  for (;;) {
    zmq::message_t msg;
    auto got = s.recv(msg, zmq::recv_flags::dontwait);
    if (!got) return !frames->empty();  // nothing (or, mid-message, cannot happen: parts arrive together)
    if (user_id != nullptr) {
      // Frames that came over the wire carry the connection's metadata (a ROUTER's routing-id frame does not).
      const char* uid = zmq_msg_gets(msg.handle(), "User-Id");
      if (frames->empty()) user_id->clear();
      if (uid != nullptr) *user_id = uid;
    }
    frames->emplace_back(static_cast<const char*>(msg.data()), msg.size());
    if (!msg.more()) return true;
  }
}

// Sends frames (after an optional routing id) without blocking. False when the message could not be queued
// (ROUTER_MANDATORY: the peer is gone; or its high-water mark is reached). Nothing is half-sent: libzmq
// queues a multipart message whole or not at all. Const frames are copied into libzmq; frames the caller gives up
// (SendOwnedFrames) have their large ones handed over without a copy (libzmq frees them once sent).
template <typename Frames>
inline bool SendFramesImpl(zmq::socket_t& s, const std::string* routing_id, Frames& frames) {
  constexpr size_t kCopyBelow = 64 << 10;
  try {
    if (routing_id != nullptr) {
      if (!s.send(zmq::buffer(*routing_id), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return false;
    }
    for (size_t i = 0; i < frames.size(); ++i) {
      auto flags =
          i + 1 < frames.size() ? zmq::send_flags::sndmore | zmq::send_flags::dontwait : zmq::send_flags::dontwait;
      if constexpr (!std::is_const_v<Frames>) {
        if (frames[i].size() >= kCopyBelow) {
          auto* kept = new std::string(std::move(frames[i]));
          zmq::message_t msg(
              kept->data(), kept->size(), [](void*, void* hint) { delete static_cast<std::string*>(hint); }, kept);
          if (!s.send(msg, flags)) return false;  // (msg, not yet sent, frees it)
          continue;
        }
      }
      if (!s.send(zmq::buffer(frames[i]), flags)) return false;
    }
    return true;
  } catch (const zmq::error_t&) {  // EHOSTUNREACH with ROUTER_MANDATORY
    return false;
  }
}

inline bool SendFrames(zmq::socket_t& s, const std::string* routing_id, const std::vector<std::string>& frames) {
  return SendFramesImpl(s, routing_id, frames);
}

inline bool SendOwnedFrames(zmq::socket_t& s, const std::string* routing_id, std::vector<std::string>&& frames) {
  return SendFramesImpl(s, routing_id, frames);
}

inline std::vector<std::string_view> Views(const std::vector<std::string>& frames, size_t from) {
  std::vector<std::string_view> v;
  for (size_t i = from; i < frames.size(); ++i) v.emplace_back(frames[i]);
  return v;
}

}  // namespace comfymq::net
