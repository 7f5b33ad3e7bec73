#include "comfymq/curve.h"

#include <zmq.h>

#include <cstring>

namespace comfymq {

bool CurveAvailable() { return zmq_has("curve") != 0; }

Status MakeCurveKeyPair(std::string* public_key, std::string* secret_key) {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return Status::IOError(std::string("cannot make a CURVE key pair: ") + zmq_strerror(zmq_errno()) +
                           " (libzmq needs libsodium)");
  }
  *public_key = pub;
  *secret_key = sec;
  return Status::OK();
}

Status CheckCurveKey(std::string_view key, const char* what) {
  if (key.size() != 40) return Status::InvalidArgument(std::string(what) + " must be a 40-character Z85 CURVE key");
  uint8_t bin[32];
  std::string z(key);
  if (zmq_z85_decode(bin, z.c_str()) == nullptr) {
    return Status::InvalidArgument(std::string(what) + " is not valid Z85 text");
  }
  return Status::OK();
}

Status CurvePublicFromSecret(const std::string& secret_key, std::string* public_key) {
  CMQ_RETURN_IF_ERROR(CheckCurveKey(secret_key, "secret key"));
  char pub[41];
  if (zmq_curve_public(pub, secret_key.c_str()) != 0) return Status::InvalidArgument("cannot derive the public key");
  *public_key = pub;
  return Status::OK();
}

bool IsLoopbackEndpoint(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0) return true;
  if (endpoint.rfind("tcp://", 0) != 0) return false;
  std::string host = endpoint.substr(6);
  size_t colon = host.rfind(':');
  if (colon != std::string::npos) host = host.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

}  // namespace comfymq
