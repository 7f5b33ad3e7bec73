// Checkpoints: the whole in-memory index written to one file, so opening a store reads the checkpoint and
// replays only the log segments written after it (open time does not grow with history).
//
//   checkpoint := "CMQCKP04" u32:segment u64:last_id u64:next_token u8:paused
//                 u32:n_batches bytes:batch_name*            (index 1.., index 0 is "")
//                 u64:n_waits wait_entry*                      (live jobs that wait for others; "CMQCKP01", written
//                                                              while none waits and no document is kept, has no
//                                                              such section)
//                 u64:n_docs (bytes:key bytes:value)*          (DocTable, ascending keys; only from "CMQCKP03", written
//                                                              when there are documents, else "CMQCKP02"/"01")
//                 u32:n_owners bytes:owner_name*               (index 1.., index 0 is ""; only in "CMQCKP04", written
//                                                              when a job has had an owner, else "03" and older)
//                 u64:n_jobs job_entry*                        (ascending id)
//                 u64:n_runs run_entry*
//                 "CMQCKEND" u64:xxh3_64(every byte before "CMQCKEND")
//   job_entry  := u64:id u64:prompt_id_hash loc:job loc:status i64:updated_ms i32:priority u32:batch
//                 u16:attempts u16:max_attempts u8:state [u16:owner, in "CMQCKP04"]
//   loc        := u32:segment u32:offset u32:size
//   run_entry  := u64:id u64:token i64:expires_ms i64:deadline_ms i64:started_ms bytes:worker_id
//   wait_entry := u64:id u32:n u64:job*                          (NewJob::after)
//
// `segment` is the first log segment NOT covered: replay starts there. File name: checkpoint-<segment>.cmq.
#pragma once

#include <cstdint>
#include <string>

#include "comfymq/env.h"
#include "store/doc_table.h"
#include "store/job_table.h"

namespace comfymq::checkpoint {

struct Header {
  uint32_t segment = 0;
  uint64_t last_id = 0;
  uint64_t next_token = 1;
  bool paused = false;
  bool owners = false;  // the jobs' owners were read ("CMQCKP04"); older ones leave every owner 0
};

std::string FileName(uint32_t segment);  // "checkpoint-00000007.cmq"
bool ParseFileName(const std::string& name, uint32_t* segment);

// Writes the checkpoint to `file` (not synced). The caller syncs, renames into place and syncs the dir.
Status Write(WritableFile* file, const Header& header, const JobTable& table, const DocTable& docs);
// Loads a checkpoint into an empty table. Corruption when the file fails its checksum or does not parse.
Status Read(Env* env, const std::string& path, Header* header, JobTable* table, DocTable* docs);

}  // namespace comfymq::checkpoint
