// CurveZMQ keys: the broker has a key pair, workers pin the broker's public key, and the broker admits only
// the worker public keys on its allow list. Keys travel as 40-character Z85 text.
#pragma once

#include <string>
#include <string_view>

#include "comfymq/status.h"

namespace comfymq {

bool CurveAvailable();  // libzmq was built with CURVE (libsodium)
Status MakeCurveKeyPair(std::string* public_key, std::string* secret_key);
Status CurvePublicFromSecret(const std::string& secret_key, std::string* public_key);
// InvalidArgument naming `what` unless key is 40 characters of Z85 text.
Status CheckCurveKey(std::string_view key, const char* what);
// True for endpoints that stay on this machine (tcp on 127.0.0.0/8 or ::1 or localhost, ipc://, inproc://):
// the only place plain-text links are allowed without an explicit opt-out.
bool IsLoopbackEndpoint(const std::string& endpoint);

}  // namespace comfymq
