#include "net/protocol.h"

#include <cstring>

#include "comfymq/artifact_writer.h"
#include "util/checksum.h"
#include "util/coding.h"
#include "util/json_checks.h"
#include "util/prompt_scan.h"

namespace comfymq::proto {
namespace {

bool KnownCmd(uint8_t c) { return (c >= 1 && c <= 12) || (c >= 64 && c <= 73); }

void PutHeld(std::string* b, const std::vector<Held>& v) {
  PutU32(b, static_cast<uint32_t>(v.size()));
  for (const Held& h : v) {
    PutU64(b, h.job_id);
    PutU64(b, h.token);
  }
}

// Reads a body field by field; every failure becomes a message naming the field.
class Reader {
 public:
  explicit Reader(std::string_view body) : d_(body) {}

  bool U8(uint8_t* v, const char* what) { return d_.U8(v) || Fail(what); }
  bool U32(uint32_t* v, const char* what) { return d_.U32(v) || Fail(what); }
  bool U64(uint64_t* v, const char* what) { return d_.U64(v) || Fail(what); }
  bool I64(int64_t* v, const char* what) { return d_.I64(v) || Fail(what); }
  bool Text(std::string* v, size_t max, const char* what, bool required = false) {
    std::string_view s;
    if (!d_.Bytes(&s)) return Fail(what);
    if (s.size() > max) return Fail(what, "too long");
    if (required && s.empty()) return Fail(what, "empty");
    for (char c : s) {
      if (static_cast<unsigned char>(c) < 0x20) return Fail(what, "has control characters");
    }
    v->assign(s.data(), s.size());
    return true;
  }
  // JSON nested at most kMaxJsonDepth deep; any_depth (a job's fields, which the worker checks itself so
  // that it can refuse the job by name) takes valid JSON however deep.
  bool Json(std::string* v, const char* what, bool required = false, bool any_depth = false) {
    std::string_view s;
    if (!d_.Bytes(&s)) return Fail(what);
    if (s.size() > kMaxJson) return Fail(what, "too large");
    if (s.empty()) {
      if (required) return Fail(what, "empty");
      v->clear();
      return true;
    }
    if (any_depth ? !JsonSyntaxAccepts(s) : !ValidateJsonValue(s, what).ok()) {
      return Fail(what, any_depth ? "is not valid JSON" : "is not valid JSON or nests too deep");
    }
    v->assign(s.data(), s.size());
    return true;
  }
  // A job's prompt: any JSON value is taken here (the store checked the graph at enqueue, and the worker checks
  // it again before running it); the fast graph scan accepts the usual prompt at memory speed.
  bool Prompt(std::string* v) {
    std::string_view s;
    if (!d_.Bytes(&s)) return Fail("prompt");
    if (s.size() > kMaxJson) return Fail("prompt", "too large");
    if (s.empty()) return Fail("prompt", "empty");
    if (!FastPromptAccepts(s) && !JsonSyntaxAccepts(s)) return Fail("prompt", "is not valid JSON");
    v->assign(s.data(), s.size());
    return true;
  }
  bool HeldList(std::vector<Held>* v, const char* what) {
    uint32_t n = 0;
    if (!U32(&n, what)) return false;
    if (n > kMaxInflight || n > d_.remaining() / 16) return Fail(what, "count out of range");
    v->resize(n);
    for (Held& h : *v) {
      if (!d_.U64(&h.job_id) || !d_.U64(&h.token)) return Fail(what);
    }
    return true;
  }
  bool Done() { return d_.done() || Fail("body", "has trailing bytes"); }
  bool AtEnd() const { return d_.done(); }

  Status status() const { return error_.empty() ? Status::OK() : Status::InvalidArgument(error_); }

 private:
  bool Fail(const char* what, const char* why = "is truncated") {
    if (error_.empty()) error_ = std::string(what) + " " + why;
    return false;
  }
  Decoder d_;
  std::string error_;
};

bool Sha256Hex(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

const char* CmdName(Cmd c) {
  switch (c) {
    case Cmd::kHello: return "HELLO";
    case Cmd::kReady: return "READY";
    case Cmd::kHeartbeat: return "HEARTBEAT";
    case Cmd::kProgress: return "PROGRESS";
    case Cmd::kResult: return "RESULT";
    case Cmd::kFail: return "FAIL";
    case Cmd::kCancelled: return "CANCELLED";
    case Cmd::kChunk: return "CHUNK";
    case Cmd::kBye: return "BYE";
    case Cmd::kCaps: return "CAPS";
    case Cmd::kWelcome: return "WELCOME";
    case Cmd::kRefuse: return "REFUSE";
    case Cmd::kJob: return "JOB";
    case Cmd::kPing: return "PING";
    case Cmd::kCancel: return "CANCEL";
    case Cmd::kAck: return "ACK";
    case Cmd::kNack: return "NACK";
    case Cmd::kChunkAck: return "CHUNK_ACK";
    case Cmd::kCapsRequest: return "CAPS_REQUEST";
    case Cmd::kFetch: return "FETCH";
    case Cmd::kInputs: return "INPUTS";
    case Cmd::kInput: return "INPUT";
  }
  return "?";
}

bool IsSha256Hex(std::string_view s) { return Sha256Hex(s); }

uint32_t ChunkChecksum(std::string_view data) { return RecordChecksum(data.data(), data.size()); }

bool IsSafeFileName(std::string_view name) {
  if (name.empty() || name.find('/') != std::string_view::npos) return false;
  std::string norm;
  return NormalizeRelativePath(name, &norm).ok() && norm == name;
}

std::vector<std::string> Encode(const Message& m) {
  std::string header(kSignature, sizeof(kSignature));
  header.push_back(static_cast<char>(m.version));
  header.push_back(static_cast<char>(m.cmd));
  std::string b;
  switch (m.cmd) {
    case Cmd::kHello:
      PutBytes(&b, m.worker_id);
      PutBytes(&b, m.name);
      PutBytes(&b, m.plugin_version);
      PutBytes(&b, m.comfyui_version);
      PutU32(&b, m.capacity);
      PutBytes(&b, m.info_json);
      PutBytes(&b, m.caps_json);
      PutHeld(&b, m.held);
      if (!m.instance.empty() || !m.install.empty()) {
        PutBytes(&b, m.instance);
        PutBytes(&b, m.install);
      }
      break;
    case Cmd::kReady: PutU32(&b, m.credit); break;
    case Cmd::kHeartbeat:
    case Cmd::kBye:
    case Cmd::kPing:
    case Cmd::kCapsRequest: break;
    case Cmd::kProgress:
      PutU64(&b, m.job_id);
      PutU64(&b, m.token);
      PutBytes(&b, m.json);
      break;
    case Cmd::kResult:
      PutU64(&b, m.job_id);
      PutU64(&b, m.token);
      PutBytes(&b, m.json);
      PutU32(&b, static_cast<uint32_t>(m.files.size()));
      for (const FileEntry& f : m.files) {
        PutBytes(&b, f.name);
        PutU64(&b, f.size);
        PutBytes(&b, f.sha256);
        PutBytes(&b, f.mime);
      }
      break;
    case Cmd::kFail:
      PutU64(&b, m.job_id);
      PutU64(&b, m.token);
      PutU8(&b, m.retryable ? 1 : 0);
      PutBytes(&b, m.json);
      break;
    case Cmd::kCancelled:
      PutU64(&b, m.job_id);
      PutU64(&b, m.token);
      break;
    case Cmd::kChunk:
      PutU64(&b, m.job_id);
      PutU64(&b, m.token);
      PutU32(&b, m.file_index);
      PutBytes(&b, m.file_name);
      PutU64(&b, m.file_size);
      PutU64(&b, m.offset);
      PutU32(&b, m.chunk_checksum);
      PutU8(&b, m.last ? 1 : 0);
      PutBytes(&b, m.file_sha256);
      break;
    case Cmd::kCaps: PutBytes(&b, m.caps_json); break;
    case Cmd::kWelcome:
      PutU32(&b, m.heartbeat_ms);
      PutU32(&b, m.liveness);
      PutBytes(&b, m.session);
      PutHeld(&b, m.held);
      PutHeld(&b, m.dropped);
      break;
    case Cmd::kRefuse: PutBytes(&b, m.reason); break;
    case Cmd::kJob:
      PutU64(&b, m.job_id);
      PutU64(&b, m.token);
      PutU32(&b, m.attempt);
      PutI64(&b, m.timeout_ms);
      PutBytes(&b, m.prompt_json);
      PutBytes(&b, m.workflow_json);
      PutBytes(&b, m.extra_json);
      break;
    case Cmd::kCancel:
    case Cmd::kNack:
      PutU64(&b, m.job_id);
      PutU64(&b, m.token);
      PutBytes(&b, m.reason);
      break;
    case Cmd::kAck:
      PutU64(&b, m.job_id);
      PutU64(&b, m.token);
      PutU8(&b, static_cast<uint8_t>(m.ack));
      break;
    case Cmd::kChunkAck:
      PutU64(&b, m.job_id);
      PutU64(&b, m.token);
      PutU32(&b, m.file_index);
      PutU64(&b, m.offset);
      PutU8(&b, static_cast<uint8_t>(m.chunk_status));
      break;
    case Cmd::kFetch:
      PutU64(&b, m.fetch);
      PutU64(&b, m.job_id);
      PutU64(&b, m.token);
      PutBytes(&b, m.file_sha256);
      PutU64(&b, m.offset);
      PutU32(&b, m.count);
      PutU64(&b, m.receipt);
      break;
    case Cmd::kInputs:
      PutU32(&b, static_cast<uint32_t>(m.inputs.size()));
      for (const std::string& sha : m.inputs) PutBytes(&b, sha);
      break;
    case Cmd::kInput:
      PutU64(&b, m.fetch);
      PutBytes(&b, m.file_sha256);
      PutU64(&b, m.offset);
      PutU64(&b, m.file_size);
      PutU32(&b, m.chunk_checksum);
      PutU8(&b, static_cast<uint8_t>(m.chunk_status));
      PutBytes(&b, m.reason);
      PutU64(&b, m.receipt);
      break;
  }
  std::vector<std::string> frames;
  frames.push_back(std::move(header));
  frames.push_back(std::move(b));
  if (m.cmd == Cmd::kChunk || m.cmd == Cmd::kInput) frames.push_back(m.data);
  return frames;
}

bool IsOtherVersion(std::string_view header, uint8_t* version) {
  if (header.size() != kHeaderSize || std::memcmp(header.data(), kSignature, sizeof(kSignature)) != 0) return false;
  *version = static_cast<uint8_t>(header[4]);
  return *version != kVersion;
}

Status Decode(const std::vector<std::string_view>& frames, Message* m, std::string* data_frame) {
  *m = Message();
  if (frames.empty()) return Status::InvalidArgument("empty message");
  std::string_view header = frames[0];
  if (header.size() != kHeaderSize || std::memcmp(header.data(), kSignature, sizeof(kSignature)) != 0) {
    return Status::InvalidArgument("not a CMQP message (bad header frame)");
  }
  m->version = static_cast<uint8_t>(header[4]);
  if (m->version != kVersion) {
    return Status::InvalidArgument("protocol version " + std::to_string(m->version) +
                                   " is not supported (this side speaks " + std::to_string(kVersion) + ")");
  }
  const uint8_t cmd = static_cast<uint8_t>(header[5]);
  if (!KnownCmd(cmd)) return Status::InvalidArgument("unknown command " + std::to_string(cmd));
  m->cmd = static_cast<Cmd>(cmd);
  const size_t want_frames = m->cmd == Cmd::kChunk || m->cmd == Cmd::kInput ? 3 : 2;
  if (frames.size() != want_frames) {
    return Status::InvalidArgument(std::string(CmdName(m->cmd)) + " needs " + std::to_string(want_frames) +
                                   " frames, got " + std::to_string(frames.size()));
  }
  if (frames[1].size() > kMaxBody) return Status::InvalidArgument("body too large");
  Reader r(frames[1]);
  uint8_t u8 = 0;
  switch (m->cmd) {
    case Cmd::kHello:
      r.Text(&m->worker_id, kMaxIdText, "worker_id", true) && r.Text(&m->name, kMaxIdText, "name") &&
          r.Text(&m->plugin_version, kMaxIdText, "plugin_version") &&
          r.Text(&m->comfyui_version, kMaxIdText, "comfyui_version") && r.U32(&m->capacity, "capacity") &&
          r.Json(&m->info_json, "info") && r.Json(&m->caps_json, "capabilities") && r.HeldList(&m->held, "held jobs") &&
          (r.AtEnd() || (r.Text(&m->instance, kMaxIdText, "instance") && r.Text(&m->install, kMaxIdText, "install"))) &&
          r.Done();
      if (r.status().ok() && (m->capacity == 0 || m->capacity > 1024))
        return Status::InvalidArgument("capacity must be 1..1024");
      break;
    case Cmd::kReady:
      r.U32(&m->credit, "credit") && r.Done();
      if (r.status().ok() && m->credit > 1024) return Status::InvalidArgument("credit out of range");
      break;
    case Cmd::kHeartbeat:
    case Cmd::kBye:
    case Cmd::kPing:
    case Cmd::kCapsRequest: r.Done(); break;
    case Cmd::kProgress:
      r.U64(&m->job_id, "job") && r.U64(&m->token, "token") && r.Json(&m->json, "progress") && r.Done();
      break;
    case Cmd::kResult: {
      uint32_t n = 0;
      if (r.U64(&m->job_id, "job") && r.U64(&m->token, "token") && r.Json(&m->json, "outputs") &&
          r.U32(&n, "file count")) {
        if (n > kMaxFiles) return Status::InvalidArgument("too many files in RESULT");
        m->files.resize(n);
        for (FileEntry& f : m->files) {
          if (!(r.Text(&f.name, 255, "file name", true) && r.U64(&f.size, "file size") &&
                r.Text(&f.sha256, 64, "sha256", true) && r.Text(&f.mime, kMaxIdText, "mime"))) {
            break;
          }
          if (!IsSafeFileName(f.name))
            return Status::InvalidArgument("file name '" + f.name + "' is not a plain file name");
          if (!IsSha256Hex(f.sha256)) return Status::InvalidArgument("sha256 of " + f.name + " is not 64 hex digits");
        }
        r.Done();
      }
      break;
    }
    case Cmd::kFail:
      r.U64(&m->job_id, "job") && r.U64(&m->token, "token") && r.U8(&u8, "retryable") &&
          r.Json(&m->json, "error", true) && r.Done();
      m->retryable = u8 != 0;
      break;
    case Cmd::kCancelled: r.U64(&m->job_id, "job") && r.U64(&m->token, "token") && r.Done(); break;
    case Cmd::kChunk:
      r.U64(&m->job_id, "job") && r.U64(&m->token, "token") && r.U32(&m->file_index, "file index") &&
          r.Text(&m->file_name, 255, "file name", true) && r.U64(&m->file_size, "file size") &&
          r.U64(&m->offset, "offset") && r.U32(&m->chunk_checksum, "checksum") && r.U8(&u8, "last") &&
          r.Text(&m->file_sha256, 64, "sha256") && r.Done();
      if (!r.status().ok()) break;
      m->last = u8 != 0;
      if (!IsSafeFileName(m->file_name))
        return Status::InvalidArgument("file name '" + m->file_name + "' is not a plain file name");
      if (m->file_index >= kMaxFiles) return Status::InvalidArgument("file index out of range");
      if (frames[2].size() > kMaxChunk) return Status::InvalidArgument("chunk too large");
      if (m->offset > m->file_size || frames[2].size() > m->file_size - m->offset) {
        return Status::InvalidArgument("chunk lies outside its file");
      }
      if (m->last && (!IsSha256Hex(m->file_sha256) || m->offset + frames[2].size() != m->file_size)) {
        return Status::InvalidArgument("last chunk needs the file's sha256 and must end the file");
      }
      if (data_frame != nullptr) {
        m->data.swap(*data_frame);
      } else {
        m->data.assign(frames[2].data(), frames[2].size());
      }
      break;
    case Cmd::kCaps: r.Json(&m->caps_json, "capabilities", true) && r.Done(); break;
    case Cmd::kWelcome:
      r.U32(&m->heartbeat_ms, "heartbeat") && r.U32(&m->liveness, "liveness") &&
          r.Text(&m->session, kMaxIdText, "session", true) && r.HeldList(&m->held, "kept jobs") &&
          r.HeldList(&m->dropped, "dropped jobs") && r.Done();
      if (r.status().ok() &&
          (m->heartbeat_ms < 10 || m->heartbeat_ms > 600000 || m->liveness < 1 || m->liveness > 100)) {
        return Status::InvalidArgument("heartbeat settings out of range");
      }
      break;
    case Cmd::kRefuse: r.Text(&m->reason, 4096, "reason") && r.Done(); break;
    case Cmd::kJob:
      r.U64(&m->job_id, "job") && r.U64(&m->token, "token") && r.U32(&m->attempt, "attempt") &&
          r.I64(&m->timeout_ms, "timeout") && r.Prompt(&m->prompt_json) &&
          r.Json(&m->workflow_json, "workflow", false, true) && r.Json(&m->extra_json, "extra", false, true) &&
          r.Done();
      break;
    case Cmd::kCancel:
    case Cmd::kNack:
      r.U64(&m->job_id, "job") && r.U64(&m->token, "token") && r.Text(&m->reason, 4096, "reason") && r.Done();
      break;
    case Cmd::kAck:
      r.U64(&m->job_id, "job") && r.U64(&m->token, "token") && r.U8(&u8, "kind") && r.Done();
      if (r.status().ok() && (u8 < 1 || u8 > 3)) return Status::InvalidArgument("unknown ack kind");
      m->ack = static_cast<AckKind>(u8);
      break;
    case Cmd::kChunkAck:
      r.U64(&m->job_id, "job") && r.U64(&m->token, "token") && r.U32(&m->file_index, "file index") &&
          r.U64(&m->offset, "offset") && r.U8(&u8, "status") && r.Done();
      if (r.status().ok() && u8 > 2) return Status::InvalidArgument("unknown chunk status");
      m->chunk_status = static_cast<ChunkStatus>(u8);
      break;
    case Cmd::kFetch:
      r.U64(&m->fetch, "fetch") && r.U64(&m->job_id, "job") && r.U64(&m->token, "token") &&
          r.Text(&m->file_sha256, 64, "sha256", true) && r.U64(&m->offset, "offset") && r.U32(&m->count, "count") &&
          r.U64(&m->receipt, "receipt") && r.Done();
      if (!r.status().ok()) break;
      if (!IsSha256Hex(m->file_sha256)) return Status::InvalidArgument("FETCH: sha256 is not 64 lowercase hex digits");
      if (m->count < 1 || m->count > kChunkWindow) return Status::InvalidArgument("FETCH: count out of range");
      break;
    case Cmd::kInputs: {
      uint32_t n = 0;
      if (!r.U32(&n, "input count")) break;
      if (n > kMaxInputsHeld) return Status::InvalidArgument("INPUTS: too many inputs");
      m->inputs.resize(n);
      for (std::string& sha : m->inputs) {
        if (!r.Text(&sha, 64, "sha256", true)) break;
        if (!IsSha256Hex(sha)) return Status::InvalidArgument("INPUTS: a sha256 is not 64 lowercase hex digits");
      }
      r.Done();
      break;
    }
    case Cmd::kInput:
      r.U64(&m->fetch, "fetch") && r.Text(&m->file_sha256, 64, "sha256", true) && r.U64(&m->offset, "offset") &&
          r.U64(&m->file_size, "size") && r.U32(&m->chunk_checksum, "checksum") && r.U8(&u8, "status") &&
          r.Text(&m->reason, 4096, "reason") && r.U64(&m->receipt, "receipt") && r.Done();
      if (!r.status().ok()) break;
      if (u8 > 2) return Status::InvalidArgument("INPUT: unknown status");
      m->chunk_status = static_cast<ChunkStatus>(u8);
      if (!IsSha256Hex(m->file_sha256)) return Status::InvalidArgument("INPUT: sha256 is not 64 lowercase hex digits");
      if (frames[2].size() > kMaxChunk) return Status::InvalidArgument("INPUT: chunk too large");
      if (m->offset > m->file_size || frames[2].size() > m->file_size - m->offset) {
        return Status::InvalidArgument("INPUT: chunk lies outside its file");
      }
      if (data_frame != nullptr) {
        m->data.swap(*data_frame);
      } else {
        m->data.assign(frames[2].data(), frames[2].size());
      }
      break;
  }
  Status s = r.status();
  if (!s.ok()) return s.WithContext(CmdName(m->cmd));
  return Status::OK();
}

}  // namespace comfymq::proto
