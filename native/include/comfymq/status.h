// Status: the result of every fallible call in the native core (no exceptions inside the core).
// A Status is either OK or carries a code and a human-readable message that says what failed and where.
// Cheap to copy when OK. Thread-compatible (a value type).
#pragma once

#include <string>
#include <utility>

namespace comfymq {

class [[nodiscard]] Status {
 public:
  enum class Code : unsigned char {
    kOk = 0,
    kNotFound,         // no such job / file
    kInvalidArgument,  // bad input from a caller; nothing was changed
    kConflict,         // illegal state transition (e.g. cancel of a finished job); nothing was changed
    kLeaseLost,        // a fencing token that no longer owns the job; nothing was changed
    kAlreadyExists,    // a name that is taken (artifact rename without replace)
    kCorruption,       // on-disk data failed a checksum or could not be decoded
    kIOError,          // the operating system refused an I/O call (also: store handle unusable)
    kNoSpace,          // the disk is full; nothing was changed, retry once space frees
    kBusy,             // the store is locked by another process
  };

  Status() = default;
  static Status OK() { return Status(); }
  static Status NotFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
  static Status InvalidArgument(std::string m) { return Status(Code::kInvalidArgument, std::move(m)); }
  static Status Conflict(std::string m) { return Status(Code::kConflict, std::move(m)); }
  static Status LeaseLost(std::string m) { return Status(Code::kLeaseLost, std::move(m)); }
  static Status AlreadyExists(std::string m) { return Status(Code::kAlreadyExists, std::move(m)); }
  static Status Corruption(std::string m) { return Status(Code::kCorruption, std::move(m)); }
  static Status IOError(std::string m) { return Status(Code::kIOError, std::move(m)); }
  static Status NoSpace(std::string m) { return Status(Code::kNoSpace, std::move(m)); }
  static Status Busy(std::string m) { return Status(Code::kBusy, std::move(m)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsInvalidArgument() const { return code_ == Code::kInvalidArgument; }
  bool IsConflict() const { return code_ == Code::kConflict; }
  bool IsLeaseLost() const { return code_ == Code::kLeaseLost; }
  bool IsAlreadyExists() const { return code_ == Code::kAlreadyExists; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }
  bool IsIOError() const { return code_ == Code::kIOError; }
  bool IsNoSpace() const { return code_ == Code::kNoSpace; }
  bool IsBusy() const { return code_ == Code::kBusy; }

  const std::string& message() const { return message_; }
  // Drops this status on purpose (Status is [[nodiscard]]): for a best-effort step whose failure changes nothing
  // anyone relies on, such as removing a temp file or closing a file already synced or abandoned. Say why at the
  // call when it is not plain.
  void IgnoreError() const {}
  // "OK" or "<code name>: <message>".
  std::string ToString() const;
  // The same status with "<context>: " put in front of the message.
  Status WithContext(const std::string& context) const;

 private:
  Status(Code c, std::string m) : code_(c), message_(std::move(m)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

const char* StatusCodeName(Status::Code code);

}  // namespace comfymq

#define CMQ_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::comfymq::Status cmq_status_ = (expr);    \
    if (!cmq_status_.ok()) return cmq_status_; \
  } while (0)
