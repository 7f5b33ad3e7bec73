// comfymq_legacy_store DIR DEPTH: makes a store in DIR holding one pending job whose prompt nests DEPTH levels
// deep, as a store written before the nesting limit (kMaxJsonDepth) could hold it, and prints the job's id.
// Tests use it to check that such a job can still be read (never a 500) and that a worker fails it with a
// reason instead of wedging. Test-only: the job is enqueued with a placeholder prompt of the same length, the
// store is closed, and the placeholder's bytes in the log are overwritten, with the checksums of the job record
// and of the commit group around it written anew (docs/store-format.md).
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>

#include "comfymq/env.h"
#include "comfymq/store.h"
#include "store/log_format.h"
#include "store/log_segment.h"
#include "util/checksum.h"
#include "util/coding.h"

using namespace comfymq;

namespace {

int Die(const std::string& why) {
  std::cerr << "comfymq_legacy_store: " << why << "\n";
  return 1;
}

uint32_t ReadU32(const std::string& b, size_t at) {
  uint32_t v = 0;
  Decoder d(std::string_view(b).substr(at, 4));
  d.U32(&v);
  return v;
}

void WriteU32(std::string* b, size_t at, uint32_t v) {
  std::string e;
  PutU32(&e, v);
  b->replace(at, 4, e);
}

// Writes the checksum of the record framed at `at` anew.
void Reseal(std::string* b, size_t at) {
  const uint32_t length = ReadU32(*b, at + 8);
  const size_t covered = log::kRecordHeaderSize - log::kChecksumCoverageOffset + length;
  WriteU32(b, at + 4, RecordChecksum(b->data() + at + log::kChecksumCoverageOffset, covered));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) return Die("usage: comfymq_legacy_store DIR DEPTH");
  const std::string dir = argv[1];
  const int depth = std::atoi(argv[2]);
  if (depth < 1 || depth > 1000000) return Die("DEPTH must be 1..1000000");
  const std::string head = R"({"1": {"class_type": "EmptyImage", "inputs": {"x": )", tail = "}}}";
  const std::string deep = head + std::string(depth, '[') + std::string(depth, ']') + tail;
  // The placeholder: valid, of the same length, and random enough to be stored raw (not LZ4).
  std::mt19937_64 rng(42);
  std::string filler(2 * depth - 2, 'a');
  for (char& c : filler) c = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[rng() % 62];
  const std::string placeholder = head + "\"" + filler + "\"" + tail;

  std::unique_ptr<Store> store;
  Status s = Store::Open(StoreOptions(), dir, &store);
  if (!s.ok()) return Die(s.ToString());
  NewJob job;
  job.prompt = placeholder;
  job.prompt_id = "legacy-deep";
  EnqueueResult r;
  s = store->Enqueue(job, &r);
  if (s.ok()) s = store->Close();
  if (!s.ok()) return Die(s.ToString());
  store.reset();

  std::vector<std::string> names;
  if (!(s = Env::Default()->GetChildren(dir, &names)).ok()) return Die(s.ToString());
  for (const std::string& name : names) {
    uint32_t n;
    if (!log::ParseSegmentFileName(name, &n)) continue;
    const std::string path = JoinPath(dir, name);
    std::string b;
    if (!(s = Env::Default()->ReadFileToString(path, &b)).ok()) return Die(s.ToString());
    const size_t at = b.find(placeholder);
    if (at == std::string::npos) continue;
    b.replace(at, deep.size(), deep);
    // The group around it, then the record inside the group that holds it.
    for (size_t g = log::kSegmentHeaderSize; g + log::kRecordHeaderSize <= b.size();) {
      const uint32_t glen = ReadU32(b, g + 8);
      if (ReadU32(b, g) != log::kRecordMagic) break;
      const size_t gend = g + log::kRecordHeaderSize + glen;
      if (at >= g && at < gend) {
        for (size_t rec = g + log::kRecordHeaderSize; rec < gend;) {
          const size_t rend = rec + log::kRecordHeaderSize + ReadU32(b, rec + 8);
          if (at >= rec && at < rend) Reseal(&b, rec);
          rec = rend;
        }
        Reseal(&b, g);
        std::ofstream(path, std::ios::binary | std::ios::trunc) << b;
        std::cout << FormatJobId(r.id) << "\n";
        return 0;
      }
      g = gend;
    }
    return Die("found the placeholder outside any group in " + path);
  }
  return Die("the placeholder was not found in the log");
}
