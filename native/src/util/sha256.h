// Incremental SHA-256 over OpenSSL's libcrypto (EVP). Not thread-safe; one per stream.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace comfymq {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view data);
  // Lowercase hex digest; the object must not be updated afterwards.
  std::string HexDigest();

  static std::string Hex(std::string_view data);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace comfymq
