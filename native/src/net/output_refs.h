// Another job's output as a node input: `{"comfymq_output": {"job": "<job id>", "index": N}}` (its Nth file), with
// `"filename": "x.png"` instead of the index (its file of that name), or `"node": "<output node id>"` with an
// optional `"index"` (the Nth file that node of its graph reported: its `outputs`), which the host commits in the
// prompt of a job that waits for that
// job (NewJob::after). The store runs such a job only once the job it names has succeeded; when the broker sends
// it, each reference becomes the stored form of the file that job recorded,
// `{"comfymq_input": "<sha256>", "name": "<file name>", "size": N}`, which the worker fetches like any input
// (the host reads it from the artifact root).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "comfymq/job.h"
#include "comfymq/status.h"

namespace comfymq::net {

struct UpstreamFile {
  std::string sha256;
  std::string path;  // relative to the artifact root, as the job recorded it
  uint64_t size = 0;
};

// A job's recorded artifacts (Job::artifacts parsed) and its outputs (Job::outputs, JSON text); NotFound when the
// store no longer has the job.
using ArtifactsOf = std::function<Status(uint64_t job, std::vector<Artifact>* artifacts, std::string* outputs)>;

// The prompt with every output reference replaced by its stored form (`*out` = `prompt` unchanged, and no files,
// when it names none), and the files they name. InvalidArgument, naming the node and input, for a reference that
// is malformed, names a job `after` does not hold, or a file that job did not record; the job cannot run. A recorded
// path that is absolute or leads out of the artifact root with ".." is no file. Other errors are artifacts_of's.
Status ResolveOutputRefs(const std::string& prompt, const std::vector<uint64_t>& after, const ArtifactsOf& artifacts_of,
                         std::string* out, std::vector<UpstreamFile>* files);

}  // namespace comfymq::net
