#include "store/status_doc.h"

#include <nlohmann/json.hpp>

#include "util/json_checks.h"
#include "util/json_text.h"

namespace comfymq {

using json = nlohmann::json;

StatusDoc StatusDoc::FromView(const records::StatusView& v) {
  StatusDoc d;
  d.state = v.state;
  d.attempts = v.attempts;
  d.token = v.token;
  d.lease_expires_ms = v.lease_expires_ms;
  d.deadline_ms = v.deadline_ms;
  d.started_ms = v.started_ms;
  d.finished_ms = v.finished_ms;
  d.updated_ms = v.updated_ms;
  d.worker_id = v.worker_id;
  d.outputs = v.outputs;
  d.artifacts = v.artifacts;
  d.error = v.error;
  d.history = v.history;
  return d;
}

records::StatusView StatusDoc::View(uint64_t id) const {
  records::StatusView v;
  v.id = id;
  v.state = state;
  v.attempts = attempts;
  v.token = token;
  v.lease_expires_ms = lease_expires_ms;
  v.deadline_ms = deadline_ms;
  v.started_ms = started_ms;
  v.finished_ms = finished_ms;
  v.updated_ms = updated_ms;
  v.worker_id = worker_id;
  v.outputs = outputs;
  v.artifacts = artifacts;
  v.error = error;
  v.history = history;
  return v;
}

namespace {
// Long texts are cut (a failure must still be recorded), with a note saying so.
std::string Clip(const std::string& s, size_t max) {
  if (s.size() <= max) return s;
  return s.substr(0, max) + "\n... (" + std::to_string(s.size() - max) + " more bytes cut)";
}
constexpr size_t kMaxHistoryBytes = 8u << 20;
}  // namespace

Status ErrorToJson(const JobError& e, std::string* out) {
  if (e.details.size() > (4u << 20)) return Status::InvalidArgument("error details are too large (at most 4 MiB)");
  json j = json::object();
  j["type"] = e.type.empty() ? "error" : Clip(e.type, 256);
  j["message"] = Clip(e.message, 64u << 10);
  if (!e.node_id.empty()) j["node_id"] = Clip(e.node_id, 256);
  if (!e.traceback.empty()) j["traceback"] = Clip(e.traceback, 256u << 10);
  if (!e.details.empty()) {
    CMQ_RETURN_IF_ERROR(ValidateJsonValue(e.details, "error details"));
    try {
      j["details"] = json::parse(e.details);
    } catch (const json::exception&) {
      return Status::InvalidArgument("error details are not valid JSON");
    }
  }
  *out = j.dump(-1, ' ', false, json::error_handler_t::replace);
  return Status::OK();
}

Status ArtifactsToJson(const std::vector<Artifact>& artifacts, std::string* out) {
  json arr = json::array();
  for (const Artifact& a : artifacts) {
    if (a.path.empty() || a.path[0] == '/' || a.path.find('\0') != std::string::npos) {
      return Status::InvalidArgument("artifact path must be a non-empty relative path, got '" + a.path + "'");
    }
    if (a.sha256.size() != 64 || a.sha256.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return Status::InvalidArgument("artifact " + a.path + ": sha256 must be 64 lowercase hex digits");
    }
    arr.push_back({{"path", a.path}, {"size", a.size}, {"sha256", a.sha256}, {"mime", a.mime}});
  }
  *out = artifacts.empty() ? std::string() : arr.dump(-1, ' ', false, json::error_handler_t::replace);
  return Status::OK();
}

std::string AppendHistory(const std::string& history, const RunOutcome& run, size_t max_entries) {
  if (history.empty() && run.error_json.empty() && max_entries > 0) {
    // A job's first run that ended well (the common case): the entry as text, keys in the order nlohmann's
    // object would write them, so both paths give the same bytes.
    std::string out = "[" +
                      JsonObjectText()
                          .Int("attempt", run.attempt)
                          .Int("ended_ms", run.ended_ms)
                          .Str("outcome", run.outcome)
                          .Int("started_ms", run.started_ms)
                          .Str("worker", run.worker_id)
                          .Done() +
                      "]";
    if (out.size() <= kMaxHistoryBytes) return out;
  }
  json arr = json::array();
  if (!history.empty()) {
    try {
      arr = json::parse(history);
    } catch (const json::exception&) {
      arr = json::array();
    }
    if (!arr.is_array()) arr = json::array();
  }
  json entry = {{"attempt", run.attempt},
                {"worker", run.worker_id},
                {"started_ms", run.started_ms},
                {"ended_ms", run.ended_ms},
                {"outcome", run.outcome}};
  if (!run.error_json.empty()) entry["error"] = json::parse(run.error_json, nullptr, false);
  arr.push_back(std::move(entry));
  while (max_entries > 0 && arr.size() > max_entries) arr.erase(arr.begin());
  std::string out = arr.dump(-1, ' ', false, json::error_handler_t::replace);
  while (out.size() > kMaxHistoryBytes && arr.size() > 1) {  // keep the newest entries within the bound
    arr.erase(arr.begin());
    out = arr.dump(-1, ' ', false, json::error_handler_t::replace);
  }
  return out;
}

}  // namespace comfymq
