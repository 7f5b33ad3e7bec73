// CMQP/1, the wire protocol between broker (ROUTER) and workers (DEALER). docs/protocol.md has the grammar.
//
// Every message is 2 or 3 ZeroMQ frames (after the ROUTER's routing-id frame on the broker side):
//   frame 0  header  "CMQP" u8:version u8:command                         (6 bytes)
//   frame 1  body    the command's fields, little-endian (see Message below)
//   frame 2  data    CHUNK and INPUT only: the file bytes
// Everything received is untrusted: Decode checks every size, count and string and refuses anything off.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "comfymq/status.h"

namespace comfymq::proto {

constexpr char kSignature[4] = {'C', 'M', 'Q', 'P'};
constexpr uint8_t kVersion = 1;
constexpr size_t kHeaderSize = 6;

// Limits on what a peer may send (checked by Decode).
constexpr size_t kMaxBody = 160u << 20;   // a job body carries prompt + workflow (64 MiB each at most)
constexpr size_t kMaxChunk = 4u << 20;    // one CHUNK's data
constexpr size_t kMaxIdText = 256;        // worker id, name, versions, reasons' short fields
constexpr size_t kMaxJson = 64u << 20;    // prompts, outputs, capabilities
constexpr size_t kMaxFiles = 10000;       // files in one RESULT
constexpr size_t kMaxInflight = 4096;     // jobs listed in HELLO / WELCOME
constexpr size_t kChunkBytes = 1u << 20;  // what workers send per CHUNK
constexpr uint32_t kChunkWindow = 8;      // CHUNKs in flight per transfer
constexpr size_t kMaxInputsHeld = 4096;   // sha256s in one INPUTS

// The REFUSE a connected worker hears when the host takes its key off the allow-list (Broker::SetAllowedKeys). A
// worker that hears it holds it as a standing refusal: its later connections fail in the CURVE handshake (ZAP),
// which says nothing, so this is the last word the worker's panel can show.
constexpr const char* kKeyRemoved = "its key was removed from the host's allowed workers: pair it again";

enum class Cmd : uint8_t {
  // worker -> broker
  kHello = 1,  // who I am, what I can run, what I hold
  kReady = 2,  // credit: I can take `credit` more jobs
  kHeartbeat = 3,
  kProgress = 4,   // job, token, progress JSON
  kResult = 5,     // job, token, outputs JSON, files
  kFail = 6,       // job, token, retryable, error JSON
  kCancelled = 7,  // job, token: stopped as asked
  kChunk = 8,      // job, token, file index/name/size, offset, checksum, last (+ sha256) ; data frame
  kBye = 9,        // leaving; my leases may go
  kCaps = 10,      // new capabilities JSON
  kFetch = 11,     // fetch, job, token, input sha256, offset, count, receipt: send me these chunks of an input
  kInputs = 12,    // the inputs I keep (sha256s): a job naming them is better run here
  // broker -> worker
  kWelcome = 64,      // accepted: heartbeat settings, session, which held jobs are still mine
  kRefuse = 65,       // not accepted (protocol version, key, say HELLO first): reason
  kJob = 66,          // a job to run
  kPing = 67,         // broker heartbeat
  kCancel = 68,       // stop job (cancelled by a user, or the lease is gone): reason
  kAck = 69,          // result / failure recorded (ack kind)
  kNack = 70,         // result refused: the lease is gone; reason
  kChunkAck = 71,     // chunk status and the offset to send next
  kCapsRequest = 72,  // please send fresh capabilities
  kInput = 73,        // fetch, sha256, offset, whole size, checksum, status, reason ; data: a chunk of an input
};

const char* CmdName(Cmd c);

enum class AckKind : uint8_t { kRecorded = 1, kDuplicate = 2, kResendFiles = 3 };
// CHUNK_ACK: kResume = send the file again from its start. INPUT: kResume = busy, ask again soon; kRefused = not
// yours to fetch, or no such input (the reason says which).
enum class ChunkStatus : uint8_t { kOk = 0, kResume = 1, kRefused = 2 };

struct Held {  // a job a worker holds (HELLO) or keeps (WELCOME)
  uint64_t job_id = 0;
  uint64_t token = 0;
};

struct FileEntry {  // a file of a RESULT
  std::string name;
  uint64_t size = 0;
  std::string sha256;  // lowercase hex
  std::string mime;
};

// One message; which fields a command uses is listed in docs/protocol.md.
struct Message {
  Cmd cmd = Cmd::kHeartbeat;
  uint8_t version = kVersion;
  // HELLO
  std::string worker_id, name, plugin_version, comfyui_version, info_json, caps_json;
  uint32_t capacity = 0;
  std::vector<Held> held;     // HELLO: jobs I hold; WELCOME: those still yours
  std::vector<Held> dropped;  // WELCOME: those no longer yours (stop them)
  // HELLO, optional (trailing; absent from older workers): `instance` is random per worker process and the same
  // over its reconnects; `install` is random per installation (kept beside its worker id). Neither is shown or
  // logged: the broker compares them to tell a reconnect or a restart from two workers sharing one id.
  std::string instance, install;
  // READY
  uint32_t credit = 0;
  // WELCOME
  uint32_t heartbeat_ms = 0;
  uint32_t liveness = 0;
  std::string session;
  // job-scoped
  uint64_t job_id = 0;
  uint64_t token = 0;
  uint32_t attempt = 0;
  int64_t timeout_ms = 0;                  // JOB: longest the run may take; 0 = none
  std::string prompt_json, workflow_json;  // JOB
  std::string extra_json;                  // JOB: prompt_id, batch_id, owner, priority, create_time, enqueued_at
  std::string json;                        // PROGRESS progress, RESULT outputs, FAIL error
  bool retryable = false;                  // FAIL
  std::vector<FileEntry> files;            // RESULT
  std::string reason;                      // REFUSE, CANCEL, NACK
  AckKind ack = AckKind::kRecorded;        // ACK
  // CHUNK / CHUNK_ACK
  uint32_t file_index = 0;
  std::string file_name;        // CHUNK
  uint64_t file_size = 0;       // CHUNK: the whole file's size
  uint64_t offset = 0;          // CHUNK: where data goes; CHUNK_ACK: what to send next
  uint32_t chunk_checksum = 0;  // CHUNK: low 32 bits of XXH3-64 of data
  bool last = false;            // CHUNK: the file's final chunk (file_sha256 set)
  std::string file_sha256;      // CHUNK (last)
  ChunkStatus chunk_status = ChunkStatus::kOk;
  std::string data;  // CHUNK, INPUT: frame 2
  // FETCH / INPUT (also job_id, token, offset; INPUT: file_size = the whole input's size, chunk_checksum,
  // chunk_status, reason). `fetch` is the worker's number for one fetch of one input; `file_sha256` names it.
  uint64_t fetch = 0;
  uint32_t count = 0;  // FETCH: chunks wanted from offset on (1..kChunkWindow)
  // INPUT: an unguessable number for this chunk; FETCH: the newest one the worker has read (0: none yet). The
  // broker sends a worker only so many chunks past the newest receipt it echoed: reading is the only way to learn
  // one, so a worker that does not read cannot make the broker queue more for it.
  uint64_t receipt = 0;
  // INPUTS: the sha256s of the inputs a worker keeps (at most kMaxInputsHeld; each 64 lowercase hex digits)
  std::vector<std::string> inputs;
};

// Encodes into frames (header, body, and for CHUNK the data).
std::vector<std::string> Encode(const Message& m);
// Decodes frames from a peer. InvalidArgument says what was wrong; a version other than kVersion decodes
// only the header (m->version set) and returns NotSupported-style InvalidArgument with "version" in it.
// data_frame: the data frame's own string (CHUNK, INPUT), taken into m->data instead of copied.
Status Decode(const std::vector<std::string_view>& frames, Message* m, std::string* data_frame = nullptr);
// True when the header frame is ours but speaks another protocol version (*version set).
bool IsOtherVersion(std::string_view header, uint8_t* version);

uint32_t ChunkChecksum(std::string_view data);

// File names in RESULT / CHUNK are one path component that NormalizeRelativePath accepts.
bool IsSafeFileName(std::string_view name);

// 64 lowercase hex digits.
bool IsSha256Hex(std::string_view s);

}  // namespace comfymq::proto
