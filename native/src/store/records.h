// Payloads of the log's record types (grammar in docs/store-format.md). Views point into the buffer they
// were decoded from; Encode* functions append to *out. Every payload starts with a version byte.
// Decoding checks structure only: a job's compressed prompt is unpacked on demand (UnpackText), not here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "comfymq/job.h"
#include "comfymq/status.h"
#include "store/text_codec.h"

namespace comfymq::records {

constexpr uint8_t kVersion = 1;          // status, erase and meta payloads
constexpr uint8_t kJobVersionExt = 4;    // version 2 plus tagged extensions (after, labels): written with labels
constexpr uint8_t kJobVersionAfter = 3;  // version 2 plus the jobs it waits for: written when there are some
constexpr uint8_t kJobVersion = 2;       // job payloads as written now: prompt and workflow each with a codec
constexpr uint8_t kJobVersionRaw = 1;    // job payloads of older stores (texts always raw): still read
// Byte offset of the job id inside a job payload, so a payload prepared before the id is known can be
// patched in place.
constexpr size_t kJobIdOffset = 1;

struct JobView {
  uint64_t id = 0;
  int32_t priority = 1;
  uint16_t max_attempts = 1;
  int64_t timeout_ms = 0;
  int64_t create_time_ms = 0;
  std::string_view prompt_id, batch_id, owner;
  StoredText prompt, workflow;  // as stored: raw or compressed (see text_codec.h)
  std::vector<uint64_t> after;  // the jobs it waits for (NewJob::after)
  std::string_view labels;      // NewJob::labels (JSON object text), empty when none
};

struct StatusView {
  uint64_t id = 0;
  JobState state = JobState::kPending;
  uint16_t attempts = 0;
  uint64_t token = 0;
  int64_t lease_expires_ms = 0;
  int64_t deadline_ms = 0;
  int64_t started_ms = 0;
  int64_t finished_ms = 0;
  int64_t updated_ms = 0;
  std::string_view worker_id, outputs, artifacts, error, history;
};

struct EraseView {
  int64_t at_ms = 0;
  std::vector<uint64_t> ids;
};

// Writes version kJobVersion, kJobVersionAfter when v.after is not empty, kJobVersionExt when v.labels is not empty
// (so a job without labels reads in builds that know no labels), with the texts as v.prompt / v.workflow say
// (PackText chooses). Version 4's extensions: u8 tag, bytes payload; tag 1 after (u64 each), tag 2 labels; a reader
// skips a tag it does not know.
void EncodeJob(const JobView& v, std::string* out);
// Reads versions 1 to 4. Only the framing is checked: a compressed text that
// does not decompress is found by UnpackText, when the text is read (so the job itself survives an open).
Status DecodeJob(std::string_view payload, JobView* v);
void PatchJobId(std::string* payload, uint64_t id);

void EncodeStatus(const StatusView& v, std::string* out);
Status DecodeStatus(std::string_view payload, StatusView* v);

void EncodeErase(int64_t at_ms, const uint64_t* ids, size_t n, std::string* out);
Status DecodeErase(std::string_view payload, EraseView* v);

void EncodeMeta(bool paused, std::string* out);
Status DecodeMeta(std::string_view payload, bool* paused);
// A token reservation: every fencing token below `reserved_below` may have been handed out.
void EncodeTokens(uint64_t reserved_below, std::string* out);
// A document set (value) or removed (erase): u8 version, u8 op (1 set, 2 remove), bytes key, bytes value (set only).
void EncodeDoc(std::string_view key, std::string_view value, bool erase, std::string* out);
Status DecodeDoc(std::string_view payload, std::string_view* key, std::string_view* value, bool* erase);
Status DecodeTokens(std::string_view payload, uint64_t* reserved_below);

}  // namespace comfymq::records
