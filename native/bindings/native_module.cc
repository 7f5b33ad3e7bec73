// The one pybind11 file: the Python face of the native core (module comfy_nodes._native).
//
// Shims here adapt the C++ API at the boundary; the core knows nothing of Python. The GIL is released
// around every call that syncs, waits or locks. Status values map to Python in one place (Raise):
// InvalidArgument -> ValueError, NotFound -> KeyError, the rest -> ComfyMQError and its subclasses.
// JSON values cross as Python objects (json.dumps / json.loads at the boundary).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "comfymq/artifact_writer.h"
#include "comfymq/broker.h"
#include "comfymq/curve.h"
#include "comfymq/job.h"
#include "comfymq/store.h"
#include "comfymq/worker_client.h"

namespace py = pybind11;
using namespace comfymq;

namespace {

// ---- errors -------------------------------------------------------------------------------------------

struct Errors {
  py::object base, locked, disk_full, corruption, conflict, lease_lost;
};
Errors* g_errors = nullptr;

[[noreturn]] void Raise(const Status& s) {
  PyObject* type = g_errors->base.ptr();
  switch (s.code()) {
    case Status::Code::kInvalidArgument: type = PyExc_ValueError; break;
    case Status::Code::kNotFound: type = PyExc_KeyError; break;
    case Status::Code::kBusy: type = g_errors->locked.ptr(); break;
    case Status::Code::kNoSpace: type = g_errors->disk_full.ptr(); break;
    case Status::Code::kCorruption: type = g_errors->corruption.ptr(); break;
    case Status::Code::kConflict: type = g_errors->conflict.ptr(); break;
    case Status::Code::kLeaseLost: type = g_errors->lease_lost.ptr(); break;
    default: break;
  }
  // (A message may quote what a caller sent: bytes that are not UTF-8 are shown escaped, where PyErr_SetString would
  // raise with no message at all.)
  const std::string& m = s.message();
  PyObject* text = PyUnicode_DecodeUTF8(m.data(), static_cast<Py_ssize_t>(m.size()), "backslashreplace");
  if (text == nullptr) {
    PyErr_Clear();
    PyErr_SetString(type, "(a message that could not be decoded)");
  } else {
    PyErr_SetObject(type, text);
    Py_DECREF(text);
  }
  throw py::error_already_set();
}

void Check(const Status& s) {
  if (!s.ok()) Raise(s);
}

// A broker shared by the Python object and the calls running on it, owning a reference to the store it
// uses so the store outlives it however the last reference goes.
std::shared_ptr<Broker> Shared(std::unique_ptr<Broker> b, std::shared_ptr<Store> store) {
  return std::shared_ptr<Broker>(b.release(), [store](Broker* p) { delete p; });
}

// Runs fn with the GIL released and returns its result: every native call that may block (disk syncs, socket
// waits, locks) goes through here, so other Python threads run meanwhile. fn must not touch Python objects.
// Not py::gil_scoped_release: it takes the GIL back in a destructor, and when the interpreter is exiting Python
// ends a daemon thread right there (pthread_exit), which inside a destructor is std::terminate. Here it is a
// plain call, so such a thread unwinds and ends quietly.
template <typename Fn>
auto NoGil(Fn&& fn) -> decltype(fn()) {
  using R = decltype(fn());
  if constexpr (std::is_void_v<R>) {
    NoGil([&] {
      fn();
      return true;
    });
  } else {
    std::optional<R> result;
    std::exception_ptr error;
    PyThreadState* state = PyEval_SaveThread();
    try {
      result.emplace(fn());
    } catch (...) {
      error = std::current_exception();
    }
    PyEval_RestoreThread(state);  // outside any handler or destructor
    if (error) std::rethrow_exception(error);
    return std::move(*result);
  }
}

// ---- JSON at the boundary -----------------------------------------------------------------------------

// Python's json module, imported once while this module initialises. (Not a function-local static: its
// first use could come from two threads at once, and importing lets the GIL go mid-initialisation, so the
// second thread would wait on the static's guard holding the GIL the first needs back: a deadlock.)
py::object* g_json = nullptr;

py::object JsonModule() { return *g_json; }

// Python text as UTF-8; text Python cannot encode (a lone surrogate) is a ValueError, not a crash.
std::string Utf8(const py::handle& text, const char* what) {
  Py_ssize_t len = 0;
  const char* p = PyUnicode_AsUTF8AndSize(text.ptr(), &len);
  if (p == nullptr) {
    PyErr_Clear();
    throw py::value_error(std::string(what) + " is not valid Unicode text (it contains a lone surrogate)");
  }
  return std::string(p, static_cast<size_t>(len));
}

std::string TypeName(const py::handle& v) { return py::str(py::type::of(v).attr("__name__")).cast<std::string>(); }

std::string TextArg(const py::handle& v, const char* what) {
  if (!PyUnicode_Check(v.ptr())) throw py::value_error(std::string(what) + " must be a string, got " + TypeName(v));
  return Utf8(v, what);
}

int64_t IntArg(const py::handle& v, const char* what) {
  if (PyBool_Check(v.ptr()) || !PyLong_Check(v.ptr())) {
    throw py::value_error(std::string(what) + " must be an integer, got " + TypeName(v));
  }
  int overflow = 0;
  long long x = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
  if (overflow != 0) throw py::value_error(std::string(what) + " is out of range");
  return x;
}

double NumberArg(const py::handle& v, const char* what) {
  if (PyBool_Check(v.ptr()) || !(PyLong_Check(v.ptr()) || PyFloat_Check(v.ptr()))) {
    throw py::value_error(std::string(what) + " must be a number, got " + TypeName(v));
  }
  return PyFloat_AsDouble(v.ptr());
}

std::string Dumps(const py::handle& value, const char* what) {
  py::object text;
  try {
    text = JsonModule().attr("dumps")(value, py::arg("ensure_ascii") = false, py::arg("allow_nan") = false);
  } catch (py::error_already_set& e) {
    if (e.matches(PyExc_RecursionError)) {
      throw py::value_error(std::string(what) + " nests deeper than " + std::to_string(kMaxJsonDepth) +
                            " levels of objects and arrays (the limit)");
    }
    throw py::value_error(std::string(what) + " is not valid JSON: " + py::str(e.value()).cast<std::string>());
  }
  return Utf8(text, what);
}

py::object Loads(const std::string& text) {
  if (text.empty()) return py::none();
  return JsonModule().attr("loads")(py::str(text));
}

// For reads of stored records: a value Python cannot load (one stored before the depth limit existed) comes back
// as its JSON text, so reading a job never fails on what a caller once sent.
py::object LoadsOrText(const std::string& text) {
  try {
    return Loads(text);
  } catch (py::error_already_set&) {
    return py::str(text);
  }
}

// A graph given as a dict or as JSON text becomes JSON text; anything else is a clear ValueError.
std::string GraphText(const py::handle& value, const char* what) {
  if (PyUnicode_Check(value.ptr())) return Utf8(value, what);
  if (py::isinstance<py::dict>(value)) return Dumps(value, what);
  throw py::value_error(std::string(what) + " must be a JSON object (dict) or a JSON string, got " + TypeName(value));
}

uint64_t JobIdArg(const std::string& text) {
  uint64_t id = 0;
  if (!ParseJobId(text, &id)) throw py::key_error("no job " + text + " (job ids are 16 lowercase hex digits)");
  return id;
}

py::object OrNone(const std::string& s) { return s.empty() ? py::object(py::none()) : py::object(py::str(s)); }
py::object MsOrNone(int64_t ms) { return ms == 0 ? py::object(py::none()) : py::object(py::int_(ms)); }

py::dict JobDict(const Job& j) {
  py::dict d;
  d["id"] = FormatJobId(j.id);
  d["state"] = JobStateName(j.state);
  d["priority"] = j.priority;
  d["attempts"] = j.attempts;
  d["max_attempts"] = j.max_attempts;
  d["timeout"] = j.timeout_ms ? py::object(py::float_(j.timeout_ms / 1000.0)) : py::object(py::none());
  d["prompt_id"] = j.prompt_id;
  d["create_time"] = j.create_time_ms;
  d["enqueued_at"] = j.enqueued_ms;
  d["updated_at"] = j.updated_ms;
  d["batch_id"] = OrNone(j.batch_id);
  d["owner"] = OrNone(j.owner);
  py::list after;
  for (uint64_t id : j.after) after.append(FormatJobId(id));
  d["after"] = after;
  d["labels"] = j.labels.empty() ? py::object(py::dict()) : LoadsOrText(j.labels);
  if (!j.prompt.empty()) {
    d["prompt"] = LoadsOrText(j.prompt);
    d["workflow"] = LoadsOrText(j.workflow);
  }
  d["started_at"] = MsOrNone(j.started_ms);
  d["finished_at"] = MsOrNone(j.finished_ms);
  d["worker_id"] = OrNone(j.worker_id);
  if (j.state == JobState::kRunning && j.lease_token != 0) {
    py::dict lease;
    lease["token"] = j.lease_token;
    lease["expires_at"] = j.lease_expires_ms;
    d["lease"] = lease;
  } else {
    d["lease"] = py::none();
  }
  d["outputs"] = LoadsOrText(j.outputs);
  d["artifacts"] = j.artifacts.empty() ? py::object(py::list()) : LoadsOrText(j.artifacts);
  d["error"] = LoadsOrText(j.error);
  d["history"] = j.history.empty() ? py::object(py::list()) : LoadsOrText(j.history);
  d["progress"] = LoadsOrText(j.progress);
  return d;
}

// Builds a NewJob from keyword-style values (the shape of enqueue()'s arguments and enqueue_many's dicts).
NewJob MakeNewJob(const py::handle& prompt, const py::handle& workflow, const py::handle& priority,
                  const py::handle& metadata, const py::handle& prompt_id, const py::handle& create_time,
                  const py::handle& batch_id, const py::handle& max_attempts, const py::handle& timeout,
                  const py::handle& owner, const py::handle& after, const py::handle& labels,
                  const py::handle& notify) {
  NewJob j;
  if (prompt.is_none()) throw py::value_error("prompt is required");
  j.prompt = GraphText(prompt, "prompt");
  if (!workflow.is_none()) j.workflow = GraphText(workflow, "workflow");
  if (!priority.is_none()) {
    int64_t p = IntArg(priority, "priority");
    if (p < INT32_MIN || p > INT32_MAX) throw py::value_error("priority is out of range (32-bit integer)");
    j.priority = static_cast<int32_t>(p);
  }
  if (!metadata.is_none()) {
    std::string text = PyUnicode_Check(metadata.ptr()) ? Utf8(metadata, "metadata") : Dumps(metadata, "metadata");
    Check(ApplyMetadataJson(text, &j));
  }
  if (!prompt_id.is_none()) j.prompt_id = TextArg(prompt_id, "prompt_id");
  if (!create_time.is_none()) j.create_time_ms = IntArg(create_time, "create_time");
  if (!batch_id.is_none()) j.batch_id = TextArg(batch_id, "batch_id");
  if (!max_attempts.is_none()) {
    int64_t m = IntArg(max_attempts, "max_attempts");
    if (m < 1 || m > 100) throw py::value_error("max_attempts must be between 1 and 100");
    j.max_attempts = static_cast<int>(m);
  }
  if (!timeout.is_none()) {
    double t = NumberArg(timeout, "timeout");
    if (!(t >= 0) || t > 30.0 * 24 * 3600) throw py::value_error("timeout must be between 0 and 30 days (seconds)");
    j.timeout_ms = static_cast<int64_t>(t * 1000);
  }
  if (!owner.is_none()) j.owner = TextArg(owner, "owner");
  if (!notify.is_none()) {
    if (!PyBool_Check(notify.ptr())) throw py::value_error("notify must be true or false");
    j.notify = notify.cast<bool>();
  }
  if (!labels.is_none()) {
    if (!py::isinstance<py::dict>(labels)) throw py::value_error("labels must be a dict");
    if (py::len(labels) != 0) j.labels = Dumps(labels, "labels");
  }
  if (!after.is_none()) {
    if (PyUnicode_Check(after.ptr()) || !py::isinstance<py::sequence>(after)) {
      throw py::value_error("after must be a list of job ids");
    }
    for (const py::handle& id : py::reinterpret_borrow<py::sequence>(after)) {
      if (j.after.size() >= kMaxAfter) {
        throw py::value_error("after: a job may wait for at most " + std::to_string(kMaxAfter) + " jobs");
      }
      uint64_t v = 0;
      std::string text = PyUnicode_Check(id.ptr()) ? Utf8(id, "after") : std::string();
      if (!ParseJobId(text, &v)) throw py::value_error("after: " + text.substr(0, 64) + " is not a job id");
      j.after.push_back(v);
    }
  }
  return j;
}

py::dict EnqueueDict(const EnqueueResult& r) {
  py::dict d;
  d["id"] = FormatJobId(r.id);
  d["existed"] = r.existed;
  return d;
}

int64_t SecondsToMs(const py::handle& v, const char* what) {
  if (v.is_none()) return 0;
  double s = NumberArg(v, what);
  if (!(s > 0) || s > 365.0 * 24 * 3600)
    throw py::value_error(std::string(what) + " must be a positive number of seconds");
  return static_cast<int64_t>(s * 1000);
}

// ---- Store --------------------------------------------------------------------------------------------

class PyStore {
 public:
  PyStore(const std::string& path, uint64_t segment_bytes, uint64_t checkpoint_every_bytes, double reopen_grace,
          double default_lease, bool background, bool raise_writer_priority) {
    StoreOptions o;
    o.segment_bytes = segment_bytes;
    o.checkpoint_every_bytes = checkpoint_every_bytes;
    o.reopen_lease_grace_ms = static_cast<int64_t>(reopen_grace * 1000);
    o.default_lease_ms = static_cast<int64_t>(default_lease * 1000);
    o.background_thread = background;
    o.raise_log_writer_priority = raise_writer_priority;
    Status s;
    std::unique_ptr<Store> opened;
    s = NoGil([&] { return Store::Open(o, path, &opened, &report_); });
    Check(s);
    store_ = std::move(opened);
    path_ = path;
  }

  // A reference for one call: a concurrent close() cannot free the store under it (the core answers
  // "closed" instead).
  std::shared_ptr<Store> store() {
    if (!store_) Raise(Status::IOError("store " + path_ + " is closed"));
    return store_;
  }

  py::dict Report() const {
    py::dict d;
    d["checkpoint_segment"] = report_.checkpoint_segment;
    d["segments_replayed"] = report_.segments_replayed;
    d["records_replayed"] = report_.records_replayed;
    d["jobs"] = report_.jobs;
    d["torn_tail_bytes"] = report_.torn_tail_bytes;
    py::list bad;
    for (const auto& r : report_.bad_regions) bad.append(py::make_tuple(r.file, r.begin, r.end));
    d["bad_regions"] = bad;
    d["warnings"] = report_.warnings;
    d["open_seconds"] = report_.open_micros / 1e6;
    d["summary"] = report_.ToString();
    return d;
  }

  py::dict Enqueue(const py::object& prompt, const py::object& workflow, const py::object& priority,
                   const py::object& metadata, const py::object& prompt_id, const py::object& create_time,
                   const py::object& batch_id, const py::object& max_attempts, const py::object& timeout,
                   const py::object& owner, const py::object& after, const py::object& labels,
                   const py::object& notify) {
    NewJob j = MakeNewJob(prompt, workflow, priority, metadata, prompt_id, create_time, batch_id, max_attempts, timeout,
                          owner, after, labels, notify);
    std::shared_ptr<Store> s = store();
    EnqueueResult r;
    Status st = NoGil([&] { return s->Enqueue(j, &r); });
    Check(st);
    return EnqueueDict(r);
  }

  py::list EnqueueMany(const py::list& items) {
    std::vector<NewJob> jobs;
    jobs.reserve(items.size());
    size_t i = 0;
    for (const py::handle& item : items) {
      if (!py::isinstance<py::dict>(item)) throw py::value_error("job " + std::to_string(i) + " must be a dict");
      if (jobs.size() > 100000) throw py::value_error("too many jobs in one batch (at most 100000)");
      py::dict d = py::reinterpret_borrow<py::dict>(item);
      static const char* kKeys[] = {"prompt",      "workflow", "priority",     "metadata", "prompt_id",
                                    "create_time", "batch_id", "max_attempts", "timeout",  "owner",
                                    "after",       "labels",   "notify"};
      for (auto kv : d) {
        std::string k = py::str(kv.first);
        bool known = false;
        for (const char* kk : kKeys) known |= k == kk;
        if (!known) throw py::value_error("job " + std::to_string(i) + ": unknown field '" + k + "'");
      }
      auto get = [&](const char* k) { return d.contains(k) ? py::object(d[k]) : py::object(py::none()); };
      try {
        jobs.push_back(MakeNewJob(get("prompt"), get("workflow"), get("priority"), get("metadata"), get("prompt_id"),
                                  get("create_time"), get("batch_id"), get("max_attempts"), get("timeout"),
                                  get("owner"), get("after"), get("labels"), get("notify")));
      } catch (py::value_error& e) {
        throw py::value_error("job " + std::to_string(i) + ": " + e.what());
      } catch (py::error_already_set& e) {
        if (!e.matches(PyExc_ValueError)) throw;
        throw py::value_error("job " + std::to_string(i) + ": " + py::str(e.value()).cast<std::string>());
      }
      ++i;
    }
    std::shared_ptr<Store> s = store();
    std::vector<EnqueueResult> rs;
    Status st = NoGil([&] { return s->EnqueueMany(jobs, &rs); });
    Check(st);
    py::list out;
    for (const auto& r : rs) out.append(EnqueueDict(r));
    return out;
  }

  py::dict Get(const std::string& id, bool with_prompt) {
    uint64_t jid = JobIdArg(id);
    std::shared_ptr<Store> s = store();
    Job j;
    Status st = NoGil([&] { return s->Get(jid, with_prompt, &j); });
    Check(st);
    return JobDict(j);
  }

  py::dict GetByPromptId(const std::string& prompt_id, bool with_prompt) {
    std::shared_ptr<Store> s = store();
    Job j;
    Status st = NoGil([&] { return s->GetByPromptId(prompt_id, with_prompt, &j); });
    Check(st);
    return JobDict(j);
  }

  py::dict List(const py::object& state, const py::object& batch_id, const py::object& since, const py::object& until,
                const py::object& cursor, int64_t limit, bool newest_first, bool with_prompt) {
    ListQuery q;
    if (!state.is_none()) {
      std::vector<std::string> names;
      if (PyUnicode_Check(state.ptr())) {
        names.push_back(Utf8(state, "state"));
      } else if (py::isinstance<py::iterable>(state)) {
        for (const py::handle& n : state) names.push_back(TextArg(n, "state"));
        if (names.empty()) {  // no state asked for: nothing matches
          py::dict empty;
          empty["jobs"] = py::list();
          empty["next_cursor"] = py::none();
          return empty;
        }
      } else {
        throw py::value_error("state must be a state name or a list of them, got " + TypeName(state));
      }
      for (const auto& n : names) {
        JobState js;
        if (!ParseJobState(n, &js)) {
          throw py::value_error("unknown state '" + n + "' (pending, running, succeeded, failed, cancelled)");
        }
        q.state_mask |= 1u << static_cast<int>(js);
      }
    }
    if (!batch_id.is_none()) q.batch_id = TextArg(batch_id, "batch_id");
    if (!since.is_none()) q.since_ms = IntArg(since, "since");
    if (!until.is_none()) q.until_ms = IntArg(until, "until");
    if (!cursor.is_none()) {
      std::string c = TextArg(cursor, "cursor");
      if (!c.empty() && !ParseJobId(c, &q.cursor)) throw py::value_error("cursor '" + c + "' is not a job id");
    }
    if (limit < 1 || limit > 1000) throw py::value_error("limit must be between 1 and 1000");
    q.limit = static_cast<size_t>(limit);
    q.newest_first = newest_first;
    q.with_prompt = with_prompt;
    std::shared_ptr<Store> s = store();
    ListPage page;
    Status st = NoGil([&] { return s->List(q, &page); });
    Check(st);
    py::list jobs;
    for (const Job& j : page.jobs) jobs.append(JobDict(j));
    py::dict d;
    d["jobs"] = jobs;
    d["next_cursor"] = page.next_cursor ? py::object(py::str(FormatJobId(page.next_cursor))) : py::object(py::none());
    return d;
  }

  // The job's place in dispatch order (0 = next), or None when it is not a ready pending job.
  py::object QueuePosition(const std::string& job_id) {
    const uint64_t id = JobIdArg(job_id);
    std::shared_ptr<Store> s = store();
    uint64_t pos = 0;
    Status st = NoGil([&] { return s->QueuePosition(id, &pos); });
    if (st.IsNotFound()) return py::none();
    Check(st);
    return py::int_(pos);
  }

  // Fair share (Store::SetOwnerPolicies): policies are dicts {"weight": 1..1000, "max_running": n >= 0 (0: none)}.
  void SetOwnerPolicies(const py::dict& fallback, const py::dict& by_owner) {
    auto policy = [](const py::handle& d, const std::string& who) {
      if (!PyDict_Check(d.ptr())) throw py::value_error("the policy of " + who + " must be a dict");
      OwnerPolicy p;
      for (const auto& [k, v] : py::reinterpret_borrow<py::dict>(d)) {
        const std::string key = TextArg(k, "a policy key");
        const int64_t x = IntArg(v, key.c_str());
        if (key == "weight") {
          if (x < 1 || x > 1000) throw py::value_error("weight of " + who + " must be between 1 and 1000");
          p.weight = static_cast<uint32_t>(x);
        } else if (key == "max_running") {
          if (x < 0 || x > 1000000) throw py::value_error("max_running of " + who + " must be between 0 and 1000000");
          p.max_running = static_cast<uint32_t>(x);
        } else {
          throw py::value_error("unknown policy key '" + key + "' (weight, max_running)");
        }
      }
      return p;
    };
    const OwnerPolicy fb = policy(fallback, "the default");
    std::map<std::string, OwnerPolicy> named;
    for (const auto& [k, v] : by_owner) {
      const std::string name = TextArg(k, "an owner");
      named[name] = policy(v, "owner '" + name + "'");
    }
    std::shared_ptr<Store> s = store();
    Check(NoGil([&] { return s->SetOwnerPolicies(fb, named); }));
  }

  // [{"owner", "pending", "running", "weight", "max_running", "at_running_limit"}] for owners with live jobs.
  py::list OwnerStats() {
    std::shared_ptr<Store> s = store();
    std::vector<OwnerCounts> owners;
    Check(NoGil([&] { return s->OwnerStats(&owners); }));
    py::list out;
    for (const OwnerCounts& c : owners) {
      py::dict d;
      d["owner"] = c.owner;
      d["pending"] = c.pending;
      d["running"] = c.running;
      d["weight"] = c.policy.weight;
      d["max_running"] = c.policy.max_running;
      d["at_running_limit"] = c.at_running_limit;
      out.append(std::move(d));
    }
    return out;
  }

  py::dict Stats() {
    std::shared_ptr<Store> s = store();
    StoreStats st;
    Status status = NoGil([&] { return s->Stats(&st); });
    Check(status);
    py::dict counts;
    for (int i = 0; i < kNumJobStates; ++i) counts[JobStateName(static_cast<JobState>(i))] = st.counts[i];
    py::dict d;
    d["counts"] = counts;
    d["total"] = st.total;
    d["waiting"] = st.waiting;
    d["oldest_pending_age"] = st.oldest_pending_age_ms / 1000.0;
    d["finished_last_minute"] = st.finished_last_minute;
    d["finished_last_hour"] = st.finished_last_hour;
    d["paused"] = st.paused;
    d["log_bytes"] = st.log_bytes;
    d["live_bytes"] = st.live_bytes;
    d["segments"] = st.segments;
    d["checkpoint_segment"] = st.checkpoint_segment;
    d["docs"] = st.docs;
    d["doc_bytes"] = st.doc_bytes;
    d["outbox"] = st.outbox;
    py::list bounds, per_bucket;  // the log's syncs: seconds' upper bounds, then counts per bucket (one more: past all)
    for (int64_t b : kSyncBoundsMicros) bounds.append(static_cast<double>(b) / 1e6);
    for (uint64_t c : st.sync_counts) per_bucket.append(c);
    d["sync"] = py::dict(py::arg("bounds") = bounds, py::arg("counts") = per_bucket,
                         py::arg("seconds") = static_cast<double>(st.sync_micros_total) / 1e6);
    d["background_error"] = OrNone(st.background_error);
    return d;
  }

  py::object Take(const std::string& worker_id, const py::object& lease, bool ignore_pause) {
    TakeOptions o;
    o.worker_id = worker_id;
    o.lease_ms = SecondsToMs(lease, "lease");
    o.ignore_pause = ignore_pause;
    std::shared_ptr<Store> s = store();
    std::unique_ptr<Lease> l;
    Status st = NoGil([&] { return s->Take(o, &l); });
    Check(st);
    if (!l) return py::none();
    py::dict d;
    d["job_id"] = FormatJobId(l->job_id);
    d["token"] = l->token;
    d["attempt"] = l->attempt;
    d["expires_at"] = l->expires_ms;
    d["deadline_at"] = MsOrNone(l->deadline_ms);
    d["job"] = JobDict(l->job);
    return d;
  }

  int64_t Heartbeat(const std::string& id, uint64_t token, const py::object& lease) {
    uint64_t jid = JobIdArg(id);
    int64_t ms = SecondsToMs(lease, "lease");
    std::shared_ptr<Store> s = store();
    int64_t expires = 0;
    Status st = NoGil([&] { return s->Heartbeat(jid, token, ms, &expires); });
    Check(st);
    return expires;
  }

  void Progress(const std::string& id, uint64_t token, const py::object& progress) {
    uint64_t jid = JobIdArg(id);
    std::string text = progress.is_none() ? std::string() : Dumps(progress, "progress");
    std::shared_ptr<Store> s = store();
    Status st = NoGil([&] { return s->Progress(jid, token, text); });
    Check(st);
  }

  // True when recorded now; False when this lease's result was already recorded (a resend).
  bool Complete(const std::string& id, uint64_t token, const py::object& outputs, const py::object& artifacts) {
    uint64_t jid = JobIdArg(id);
    std::string out;
    if (!outputs.is_none()) {
      if (!py::isinstance<py::dict>(outputs)) throw py::value_error("outputs must be a dict of node id -> outputs");
      out = Dumps(outputs, "outputs");
    }
    std::vector<Artifact> arts;
    if (!artifacts.is_none()) {
      for (const py::handle& a : artifacts) {
        if (!py::isinstance<py::dict>(a)) throw py::value_error("each artifact must be a dict");
        py::dict d = py::reinterpret_borrow<py::dict>(a);
        Artifact art;
        try {
          art.path = d["path"].cast<std::string>();
          art.size = d["size"].cast<uint64_t>();
          art.sha256 = d["sha256"].cast<std::string>();
          art.mime = d.contains("mime") && !d["mime"].is_none() ? d["mime"].cast<std::string>() : "";
        } catch (py::error_already_set&) {
          throw py::value_error("each artifact needs path (str), size (int) and sha256 (str)");
        } catch (py::cast_error&) {
          throw py::value_error("each artifact needs path (str), size (int) and sha256 (str)");
        }
        arts.push_back(std::move(art));
      }
    }
    std::shared_ptr<Store> s = store();
    Status st = NoGil([&] { return s->Complete(jid, token, out, arts); });
    if (st.IsAlreadyExists()) return false;
    Check(st);
    return true;
  }

  bool Fail(const std::string& id, uint64_t token, const py::dict& error, bool retryable) {
    uint64_t jid = JobIdArg(id);
    JobError e;
    auto text = [&](const char* k) {
      return error.contains(k) && !error[k].is_none() ? Utf8(py::str(error[k]), k) : std::string();
    };
    e.type = text("type");
    e.message = text("message");
    e.node_id = text("node_id");
    e.traceback = text("traceback");
    if (error.contains("details") && !error["details"].is_none()) e.details = Dumps(error["details"], "error details");
    for (auto kv : error) {
      std::string k = py::str(kv.first);
      if (k != "type" && k != "message" && k != "node_id" && k != "traceback" && k != "details") {
        throw py::value_error("error has an unknown field '" + k + "' (type, message, node_id, traceback, details)");
      }
    }
    std::shared_ptr<Store> s = store();
    Status st = NoGil([&] { return s->Fail(jid, token, e, retryable); });
    if (st.IsAlreadyExists()) return false;
    Check(st);
    return true;
  }

  template <typename Fn>
  void Simple(Fn fn) {
    std::shared_ptr<Store> s = store();
    Status st = NoGil([&] { return fn(s.get()); });
    Check(st);
  }

  void Close() {
    std::shared_ptr<Store> s;
    s.swap(store_);
    if (!s) return;
    Status st = NoGil([&] {
      Status closed = s->Close();
      s.reset();
      return closed;
    });
    Check(st);
  }

 private:
  std::shared_ptr<Store> store_;
  RecoveryReport report_;
  std::string path_;
};

// ---- artifacts ----------------------------------------------------------------------------------------

py::dict ArtifactDict(const ArtifactInfo& i) {
  py::dict d;
  d["path"] = i.path;
  d["full_path"] = i.full_path;
  d["size"] = i.size;
  d["sha256"] = i.sha256;
  return d;
}

// A view of bytes-like data: zero-copy for bytes, one copy for other buffers (kept alive in *keep).
std::string_view BytesOf(const py::handle& data, py::object* keep) {
  if (PyUnicode_Check(data.ptr())) throw py::type_error("artifact data must be bytes-like, got str");
  if (!PyBytes_Check(data.ptr())) {
    PyObject* b = PyBytes_FromObject(data.ptr());
    if (b == nullptr) throw py::error_already_set();
    *keep = py::reinterpret_steal<py::object>(b);
  } else {
    *keep = py::reinterpret_borrow<py::object>(data);
  }
  char* ptr = nullptr;
  Py_ssize_t len = 0;
  PyBytes_AsStringAndSize(keep->ptr(), &ptr, &len);
  return std::string_view(ptr, static_cast<size_t>(len));
}

class PyArtifactStream {
 public:
  explicit PyArtifactStream(std::unique_ptr<ArtifactStream> s) : s_(std::move(s)) {}
  void Write(const py::object& data) {
    if (!s_) throw py::value_error("artifact stream is finished");
    py::object keep;
    std::string_view v = BytesOf(data, &keep);
    Status st = NoGil([&] { return s_->Append(v); });
    Check(st);
  }
  py::dict Commit() {
    if (!s_) throw py::value_error("artifact stream is finished");
    ArtifactInfo info;
    Status st = NoGil([&] { return s_->Commit(&info); });
    s_.reset();
    Check(st);
    return ArtifactDict(info);
  }
  void Abort() {
    if (!s_) return;
    NoGil([&] {
      s_->Abort().IgnoreError();
      s_.reset();
    });
  }
  uint64_t size() const { return s_ ? s_->size() : 0; }

 private:
  std::unique_ptr<ArtifactStream> s_;
};

class PyArtifactWriter {
 public:
  explicit PyArtifactWriter(const std::string& root) {
    Status st = NoGil([&] { return ArtifactWriter::Open(Env::Default(), root, &w_, &stale_removed_); });
    Check(st);
  }
  py::dict Write(const std::string& rel, const py::object& data) {
    py::object keep;
    std::string_view v = BytesOf(data, &keep);
    ArtifactInfo out;
    Status st = NoGil([&] { return w_->Write(rel, v, &out); });
    Check(st);
    return ArtifactDict(out);
  }
  std::unique_ptr<PyArtifactStream> Open(const std::string& rel) {
    std::unique_ptr<ArtifactStream> s;
    Status st = NoGil([&] { return w_->Begin(rel, &s); });
    Check(st);
    return std::make_unique<PyArtifactStream>(std::move(s));
  }
  const std::string& root() const { return w_->root(); }
  uint64_t stale_removed() const { return stale_removed_; }

 private:
  std::unique_ptr<ArtifactWriter> w_;
  uint64_t stale_removed_ = 0;
};

// ---- cluster: broker and worker client ----------------------------------------------------------------

int TimeoutMs(double seconds) {
  if (!(seconds >= 0)) throw py::value_error("timeout must be a non-negative number of seconds");
  return static_cast<int>(std::min(seconds, 3600.0) * 1000);
}

std::string OptText(const py::object& v, const char* what) { return v.is_none() ? std::string() : TextArg(v, what); }

class PyBroker {
 public:
  PyBroker(PyStore& store, const std::string& bind, const std::string& artifact_root, double heartbeat, int liveness,
           const py::object& curve_secret_key, const py::object& allowed_worker_keys, bool allow_plaintext,
           const py::object& lease, const std::string& plugin_version, const py::object& max_run_time,
           const py::object& worker_keys_path, const py::object& drained_path, const py::object& inputs_dir) {
    store_ = store.store();
    BrokerOptions o;
    o.bind = bind;
    o.artifact_root = artifact_root;
    o.heartbeat_ms = static_cast<int>(NumberArg(py::float_(heartbeat), "heartbeat") * 1000);
    o.liveness = liveness;
    o.curve_secret_key = OptText(curve_secret_key, "curve_secret_key");
    if (!allowed_worker_keys.is_none()) {
      for (const py::handle& k : allowed_worker_keys) o.allowed_worker_keys.push_back(TextArg(k, "allowed worker key"));
    }
    o.allow_plaintext = allow_plaintext;
    o.lease_ms = SecondsToMs(lease, "lease");
    o.plugin_version = plugin_version;
    if (!max_run_time.is_none()) {
      const double t = NumberArg(max_run_time, "max_run_time");
      if (!(t >= 0) || t > 30.0 * 24 * 3600)
        throw py::value_error("max_run_time must be 0 (no limit) to 30 days (seconds)");
      o.default_run_timeout_ms = static_cast<int64_t>(t * 1000);
    }
    o.worker_keys_path = OptText(worker_keys_path, "worker_keys_path");
    o.drained_path = OptText(drained_path, "drained_path");
    o.inputs_dir = OptText(inputs_dir, "inputs_dir");
    std::unique_ptr<Broker> started;
    Check(NoGil([&] { return Broker::Start(store_.get(), o, &started); }));
    broker_ = Shared(std::move(started), store_);
  }

  // A call holds its own reference while it runs without the GIL, so close() from another thread (the
  // broker stops, its waiting next_event returns) never frees the broker under a running call.
  std::shared_ptr<Broker> broker() {
    if (!broker_) Raise(Status::IOError("broker is closed"));
    return broker_;
  }

  py::object NextEvent(double timeout) {
    std::shared_ptr<Broker> b = broker();
    std::string e;
    bool got = NoGil([&] { return b->NextEvent(TimeoutMs(timeout), &e); });
    return got ? Loads(e) : py::none();
  }

  py::object Workers() { return Loads(broker()->WorkersJson()); }

  py::list Explain(const std::string& id) {
    uint64_t jid = JobIdArg(id);
    std::shared_ptr<Broker> b = broker();
    std::vector<std::string> why;
    Status s = NoGil([&] { return b->Explain(jid, &why); });
    Check(s);
    py::list out;
    for (const auto& w : why) out.append(w);
    return out;
  }

  py::list ExplainPrompt(const py::object& prompt) {
    std::string text = py::isinstance<py::str>(prompt) ? prompt.cast<std::string>() : Dumps(prompt, "prompt");
    std::shared_ptr<Broker> b = broker();
    std::vector<std::string> why;
    Status s = NoGil([&] { return b->ExplainPrompt(text, &why); });
    Check(s);
    py::list out;
    for (const auto& w : why) out.append(w);
    return out;
  }

  py::dict Counters() {
    BrokerCounters c = broker()->Counters();
    py::dict d;
    d["messages_in"] = c.messages_in;
    d["messages_out"] = c.messages_out;
    d["malformed"] = c.malformed;
    d["refused"] = c.refused;
    d["foreign_lease_messages"] = c.foreign_lease_messages;
    d["unroutable"] = c.unroutable;
    d["dispatched"] = c.dispatched;
    d["dispatched_on_arrival"] = c.dispatched_on_arrival;
    d["dispatched_early"] = c.dispatched_early;
    d["early_undone"] = c.early_undone;
    d["results"] = c.results;
    d["duplicates"] = c.duplicates;
    d["stale_results"] = c.stale_results;
    d["workers_lost"] = c.workers_lost;
    d["leases_released"] = c.leases_released;
    d["chunks"] = c.chunks;
    d["chunk_retries"] = c.chunk_retries;
    d["bytes_received"] = c.bytes_received;
    d["input_fetches"] = c.input_fetches;
    d["input_chunks"] = c.input_chunks;
    d["input_bytes_sent"] = c.input_bytes_sent;
    d["input_refused"] = c.input_refused;
    d["events_dropped"] = c.events_dropped;
    d["zap_denied"] = c.zap_denied;
    return d;
  }

  void Close() {
    std::shared_ptr<Broker> b;
    b.swap(broker_);  // with the GIL held: no call can be copying broker_ now
    store_.reset();
    if (!b) return;
    NoGil([&] {
      b->Stop().IgnoreError();
      b.reset();  // the last reference may close the store it owns: without the GIL too
    });
  }

 private:
  std::shared_ptr<Store> store_;  // kept alive while the broker runs
  std::shared_ptr<Broker> broker_;
};

class PyWorkerClient {
 public:
  PyWorkerClient(const std::string& broker, const std::string& worker_id, const py::object& name, int capacity,
                 const py::object& capabilities, const py::object& info, const std::string& plugin_version,
                 const std::string& comfyui_version, double heartbeat, int liveness,
                 const py::object& broker_public_key, const py::object& public_key, const py::object& secret_key,
                 bool allow_plaintext, double reconnect_min, double reconnect_max, const std::string& install_id) {
    WorkerClientOptions o;
    o.broker = broker;
    o.worker_id = worker_id;
    o.install_id = install_id;
    o.name = OptText(name, "name");
    o.capacity = capacity;
    if (!capabilities.is_none()) o.capabilities_json = Dumps(capabilities, "capabilities");
    if (!info.is_none()) o.info_json = Dumps(info, "info");
    o.plugin_version = plugin_version;
    o.comfyui_version = comfyui_version;
    o.heartbeat_ms = static_cast<int>(heartbeat * 1000);
    o.liveness = liveness;
    o.broker_public_key = OptText(broker_public_key, "broker_public_key");
    o.public_key = OptText(public_key, "public_key");
    o.secret_key = OptText(secret_key, "secret_key");
    o.allow_plaintext = allow_plaintext;
    o.reconnect_min_ms = static_cast<int>(reconnect_min * 1000);
    o.reconnect_max_ms = static_cast<int>(reconnect_max * 1000);
    std::unique_ptr<WorkerClient> started;
    Status s = NoGil([&] { return WorkerClient::Start(o, &started); });
    if (s.ok()) client_ = std::shared_ptr<WorkerClient>(std::move(started));
    Check(s);
  }

  // As for the broker: a call keeps the client alive while it waits without the GIL.
  std::shared_ptr<WorkerClient> client() {
    if (!client_) Raise(Status::IOError("worker client is closed"));
    return client_;
  }

  py::object NextJob(double timeout) {
    std::shared_ptr<WorkerClient> c = client();
    JobAssignment a;
    bool got = NoGil([&] { return c->NextJob(TimeoutMs(timeout), &a); });
    if (!got) return py::none();
    py::dict d;
    d["job_id"] = FormatJobId(a.job_id);
    d["token"] = a.token;
    d["attempt"] = a.attempt;
    d["timeout"] = a.timeout_ms ? py::object(py::float_(a.timeout_ms / 1000.0)) : py::object(py::none());
    try {
      d["prompt"] = Loads(a.prompt_json);
      d["workflow"] = Loads(a.workflow_json);
      d["extra"] = a.extra_json.empty() ? py::object(py::dict()) : Loads(a.extra_json);
    } catch (py::error_already_set& e) {
      // The client checked the job; should Python still not read it, the job fails here (not retried, with the
      // reason) and the caller hears which job it was, instead of a job that stays leased to a worker that
      // never runs it.
      const std::string why = "worker could not read the job: " + py::str(e.value()).cast<std::string>();
      py::dict error;
      error["type"] = "invalid_job";
      error["message"] = why;
      const std::string error_json = Dumps(error, "error");
      Status failed = NoGil([&] { return c->Fail(a.job_id, a.token, error_json, false); });
      throw py::value_error("job " + FormatJobId(a.job_id) + ": " + why +
                            (failed.ok() ? " (failed it)" : " (and could not fail it: " + failed.ToString() + ")"));
    }
    return d;
  }

  py::object NextEvent(double timeout) {
    std::shared_ptr<WorkerClient> c = client();
    std::string e;
    bool got = NoGil([&] { return c->NextEvent(TimeoutMs(timeout), &e); });
    return got ? Loads(e) : py::none();
  }

  template <typename Fn>
  void Call(Fn fn) {
    std::shared_ptr<WorkerClient> c = client();
    Status s = NoGil([&] { return fn(c.get()); });
    Check(s);
  }

  void Close(bool bye) {
    std::shared_ptr<WorkerClient> c;
    c.swap(client_);  // with the GIL held: no call can be copying client_ now
    if (!c) return;
    NoGil([&] {
      c->Stop(bye).IgnoreError();
      c.reset();
    });
  }

 private:
  std::shared_ptr<WorkerClient> client_;
};

}  // namespace

// The first module object made from this library (see below).
PyObject* g_first_module = nullptr;

PYBIND11_MODULE(_native, m) {
  m.doc() = "ComfyMQ native core: the durable job store and the atomic artifact writer.";
  if (g_json == nullptr) g_json = new py::object(py::module_::import("json"));  // kept for the process
  if (g_first_module != nullptr) {
    // The same library imported again under another package name (ComfyUI loads the pack by its folder
    // name; the CLI as comfy_nodes). pybind11 types can be registered once per process, so the second
    // module shares the first one's classes, functions and exceptions.
    py::dict first = py::reinterpret_borrow<py::module_>(g_first_module).attr("__dict__");
    for (auto kv : first) {
      const std::string key = py::str(kv.first);
      if (key.rfind("__", 0) != 0) m.attr(kv.first) = kv.second;
    }
    return;
  }
  g_first_module = m.ptr();
  Py_INCREF(g_first_module);

  // One set of exception classes per process: the same library may be imported under two package names
  // (ComfyUI loads the pack by folder name), and both must raise and catch the same classes.
  if (g_errors == nullptr) {
    auto* errors = new Errors();
    errors->base = py::reinterpret_steal<py::object>(
        PyErr_NewExceptionWithDoc("comfy_nodes._native.ComfyMQError",
                                  "An I/O failure or other error of the native core.", PyExc_RuntimeError, nullptr));
    auto sub = [&](const char* name, const char* doc) {
      return py::reinterpret_steal<py::object>(PyErr_NewExceptionWithDoc(
          (std::string("comfy_nodes._native.") + name).c_str(), doc, errors->base.ptr(), nullptr));
    };
    errors->locked = sub("StoreLockedError", "The store directory is open in another process.");
    errors->disk_full = sub("DiskFullError", "The disk is full; nothing was changed; retry once space frees.");
    errors->corruption = sub("CorruptionError", "On-disk data failed a checksum or could not be decoded.");
    errors->conflict = sub("ConflictError", "The job is not in a state that allows this (an illegal transition).");
    errors->lease_lost = sub("LeaseLostError", "The lease (fencing token) no longer owns the job.");
    g_errors = errors;  // never freed: the classes live as long as the interpreter
  }
  m.attr("ComfyMQError") = g_errors->base;
  m.attr("StoreLockedError") = g_errors->locked;
  m.attr("DiskFullError") = g_errors->disk_full;
  m.attr("CorruptionError") = g_errors->corruption;
  m.attr("ConflictError") = g_errors->conflict;
  m.attr("LeaseLostError") = g_errors->lease_lost;

  {
    py::list states;  // the one list of states is the core's (JobStateName); Python and the panel take it from here
    for (int i = 0; i < kNumJobStates; ++i) states.append(JobStateName(static_cast<JobState>(i)));
    m.attr("JOB_STATES") = py::tuple(states);
  }
  m.attr("MAX_JSON_DEPTH") = kMaxJsonDepth;

  m.def(
      "validate_prompt", [](const py::object& prompt) { Check(ValidatePromptJson(GraphText(prompt, "prompt"))); },
      py::arg("prompt"), "Raises ValueError naming what is wrong unless `prompt` is an API-format graph.");

  py::class_<PyStore>(m, "Store", "The durable job queue and result store in one directory.")
      .def(py::init<const std::string&, uint64_t, uint64_t, double, double, bool, bool>(), py::arg("path"),
           py::kw_only(), py::arg("segment_bytes") = 64ull << 20, py::arg("checkpoint_every_bytes") = 256ull << 20,
           py::arg("reopen_lease_grace") = 30.0, py::arg("default_lease") = 30.0, py::arg("background") = true,
           py::arg("raise_writer_priority") = true)
      .def_property_readonly("recovery_report", &PyStore::Report)
      .def("enqueue", &PyStore::Enqueue, py::arg("prompt"), py::kw_only(), py::arg("workflow") = py::none(),
           py::arg("priority") = 1, py::arg("metadata") = py::none(), py::arg("prompt_id") = py::none(),
           py::arg("create_time") = py::none(), py::arg("batch_id") = py::none(), py::arg("max_attempts") = 3,
           py::arg("timeout") = py::none(), py::arg("owner") = py::none(), py::arg("after") = py::none(),
           py::arg("labels") = py::none(), py::arg("notify") = py::none())
      .def("enqueue_many", &PyStore::EnqueueMany, py::arg("jobs"))
      .def("get", &PyStore::Get, py::arg("job_id"), py::kw_only(), py::arg("with_prompt") = true)
      .def("get_by_prompt_id", &PyStore::GetByPromptId, py::arg("prompt_id"), py::kw_only(),
           py::arg("with_prompt") = true)
      .def("list", &PyStore::List, py::kw_only(), py::arg("state") = py::none(), py::arg("batch_id") = py::none(),
           py::arg("since") = py::none(), py::arg("until") = py::none(), py::arg("cursor") = py::none(),
           py::arg("limit") = 100, py::arg("newest_first") = true, py::arg("with_prompt") = false)
      .def("stats", &PyStore::Stats)
      .def("queue_position", &PyStore::QueuePosition, py::arg("job_id"))
      .def("set_owner_policies", &PyStore::SetOwnerPolicies, py::arg("default"), py::arg("by_owner"))
      .def("owner_stats", &PyStore::OwnerStats)
      .def("take", &PyStore::Take, py::arg("worker_id"), py::kw_only(), py::arg("lease") = py::none(),
           py::arg("ignore_pause") = false)
      .def("heartbeat", &PyStore::Heartbeat, py::arg("job_id"), py::arg("token"), py::kw_only(),
           py::arg("lease") = py::none())
      .def("progress", &PyStore::Progress, py::arg("job_id"), py::arg("token"), py::arg("progress"))
      .def("complete", &PyStore::Complete, py::arg("job_id"), py::arg("token"), py::kw_only(),
           py::arg("outputs") = py::none(), py::arg("artifacts") = py::none())
      .def("fail", &PyStore::Fail, py::arg("job_id"), py::arg("token"), py::arg("error"), py::kw_only(),
           py::arg("retryable") = true)
      .def(
          "cancel",
          [](PyStore& s, const std::string& id, const std::string& reason) {
            uint64_t jid = JobIdArg(id);
            s.Simple([&](Store* st) { return st->Cancel(jid, reason); });
          },
          py::arg("job_id"), py::arg("reason") = "")
      .def(
          "cancel_batch",
          [](PyStore& s, const std::string& batch_id, const std::string& reason) {
            std::vector<uint64_t> ids;
            s.Simple([&](Store* st) { return st->CancelBatch(batch_id, reason, &ids); });
            py::list out;
            for (uint64_t id : ids) out.append(FormatJobId(id));
            return out;
          },
          py::arg("batch_id"), py::arg("reason") = "",
          "Cancels every pending or running job of the batch in one commit; returns their ids, oldest first.")
      .def(
          "retry",
          [](PyStore& s, const std::string& id) {
            uint64_t jid = JobIdArg(id);
            s.Simple([&](Store* st) { return st->Retry(jid); });
          },
          py::arg("job_id"))
      .def(
          "delete",
          [](PyStore& s, const std::string& id) {
            uint64_t jid = JobIdArg(id);
            s.Simple([&](Store* st) { return st->Delete(jid); });
          },
          py::arg("job_id"))
      .def(
          "put_doc",
          [](PyStore& s, const std::string& key, const py::handle& value, bool only_if_absent) {
            if (!PyUnicode_Check(value.ptr())) throw py::value_error("a document's value must be a str");
            std::string v = Utf8(value, "value");
            std::shared_ptr<Store> st = s.store();
            Status status = NoGil([&] { return st->PutDoc(key, v, only_if_absent); });
            if (status.IsAlreadyExists()) return false;
            Check(status);
            return true;
          },
          py::arg("key"), py::arg("value"), py::kw_only(), py::arg("only_if_absent") = false)
      .def(
          "delete_doc",
          [](PyStore& s, const std::string& key) { s.Simple([&](Store* st) { return st->DeleteDoc(key); }); },
          py::arg("key"))
      .def(
          "get_doc",
          [](PyStore& s, const std::string& key) -> py::object {
            std::shared_ptr<Store> st = s.store();
            std::string v;
            Status status = NoGil([&] { return st->GetDoc(key, &v); });
            if (status.IsNotFound()) return py::none();
            Check(status);
            return py::str(v);
          },
          py::arg("key"))
      .def(
          "list_docs",
          [](PyStore& s, const std::string& prefix, const std::string& after, int64_t limit, bool keys_only) {
            if (limit < 0) throw py::value_error("limit must not be negative");
            std::shared_ptr<Store> st = s.store();
            std::vector<std::pair<std::string, std::string>> out;
            Status status =
                NoGil([&] { return st->ListDocs(prefix, after, static_cast<size_t>(limit), keys_only, &out); });
            Check(status);
            py::list l;
            for (auto& [k, v] : out) l.append(py::make_tuple(py::str(k), py::str(v)));
            return l;
          },
          py::kw_only(), py::arg("prefix") = "", py::arg("after") = "", py::arg("limit") = 1000,
          py::arg("keys_only") = false)
      .def("pause", [](PyStore& s) { s.Simple([](Store* st) { return st->SetPaused(true); }); })
      .def("resume", [](PyStore& s) { s.Simple([](Store* st) { return st->SetPaused(false); }); })
      .def_property_readonly("paused",
                             [](PyStore& s) {
                               std::shared_ptr<Store> st = s.store();
                               return NoGil([&] { return st->paused(); });
                             })
      .def("expire_leases",
           [](PyStore& s) {
             int n = 0;
             s.Simple([&](Store* st) { return st->ExpireLeases(&n); });
             return n;
           })
      .def(
          "purge",
          [](PyStore& s, double older_than_days) {
            if (!(older_than_days >= 0)) throw py::value_error("older_than_days must not be negative");
            uint64_t n = 0;
            int64_t now_ms = Env::Default()->NowMicros() / 1000;
            int64_t before = now_ms - static_cast<int64_t>(older_than_days * 24 * 3600 * 1000);
            s.Simple([&](Store* st) { return st->Purge(before, &n); });
            return n;
          },
          py::kw_only(), py::arg("older_than_days"))
      .def("checkpoint", [](PyStore& s) { s.Simple([](Store* st) { return st->Checkpoint(); }); })
      .def("compact", [](PyStore& s) { s.Simple([](Store* st) { return st->Compact(); }); })
      .def("health", [](PyStore& s) { s.Simple([](Store* st) { return st->health(); }); })
      .def("close", &PyStore::Close)
      .def(
          "__enter__", [](PyStore& s) -> PyStore& { return s; }, py::return_value_policy::reference)
      .def("__exit__", [](PyStore& s, const py::args&) { s.Close(); });

  m.def("curve_available", &CurveAvailable, "Whether this libzmq supports CurveZMQ (it needs libsodium).");
  m.def(
      "curve_keypair",
      [] {
        std::string pub, sec;
        Check(MakeCurveKeyPair(&pub, &sec));
        return py::make_tuple(pub, sec);
      },
      "A new CurveZMQ key pair (public, secret), as 40-character Z85 text.");
  m.def(
      "curve_public_key",
      [](const std::string& secret) {
        std::string pub;
        Check(CurvePublicFromSecret(secret, &pub));
        return pub;
      },
      py::arg("secret_key"));

  py::class_<PyBroker>(m, "Broker", "The host's side of the cluster: a ROUTER socket and its thread.")
      .def(py::init<PyStore&, const std::string&, const std::string&, double, int, const py::object&, const py::object&,
                    bool, const py::object&, const std::string&, const py::object&, const py::object&,
                    const py::object&, const py::object&>(),
           py::arg("store"), py::kw_only(), py::arg("bind") = "tcp://127.0.0.1:5557", py::arg("artifact_root"),
           py::arg("heartbeat") = 1.0, py::arg("liveness") = 3, py::arg("curve_secret_key") = py::none(),
           py::arg("allowed_worker_keys") = py::none(), py::arg("allow_plaintext") = false,
           py::arg("lease") = py::none(), py::arg("plugin_version") = "", py::arg("max_run_time") = py::none(),
           py::arg("worker_keys_path") = py::none(), py::arg("drained_path") = py::none(),
           py::arg("inputs_dir") = py::none())
      .def_property_readonly("endpoint", [](PyBroker& b) { return b.broker()->endpoint(); })
      .def_property_readonly("public_key",
                             [](PyBroker& b) {
                               std::string k = b.broker()->public_key();
                               return k.empty() ? py::object(py::none()) : py::object(py::str(k));
                             })
      .def("next_event", &PyBroker::NextEvent, py::arg("timeout") = 1.0)
      .def("workers", &PyBroker::Workers)
      .def("explain", &PyBroker::Explain, py::arg("job_id"))
      .def("explain_prompt", &PyBroker::ExplainPrompt, py::arg("prompt"))
      .def(
          "drain", [](PyBroker& b, const std::string& id, bool drain) { Check(b.broker()->Drain(id, drain)); },
          py::arg("worker_id"), py::arg("drain") = true)
      .def(
          "set_allowed_keys",
          [](PyBroker& b, const std::vector<std::string>& keys) {
            std::shared_ptr<Broker> broker = b.broker();
            Check(NoGil([&] { return broker->SetAllowedKeys(keys); }));
          },
          py::arg("keys"))
      .def(
          "refresh_capabilities",
          [](PyBroker& b, const py::object& id) { Check(b.broker()->RefreshCapabilities(OptText(id, "worker_id"))); },
          py::arg("worker_id") = py::none())
      .def("counters", &PyBroker::Counters)
      .def("close", &PyBroker::Close)
      .def(
          "__enter__", [](PyBroker& b) -> PyBroker& { return b; }, py::return_value_policy::reference)
      .def("__exit__", [](PyBroker& b, const py::args&) { b.Close(); });

  py::class_<PyWorkerClient>(m, "WorkerClient", "A worker's link to a broker.")
      .def(py::init<const std::string&, const std::string&, const py::object&, int, const py::object&,
                    const py::object&, const std::string&, const std::string&, double, int, const py::object&,
                    const py::object&, const py::object&, bool, double, double, const std::string&>(),
           py::kw_only(), py::arg("broker"), py::arg("worker_id"), py::arg("name") = py::none(),
           py::arg("capacity") = 1, py::arg("capabilities") = py::none(), py::arg("info") = py::none(),
           py::arg("plugin_version") = "", py::arg("comfyui_version") = "", py::arg("heartbeat") = 1.0,
           py::arg("liveness") = 3, py::arg("broker_public_key") = py::none(), py::arg("public_key") = py::none(),
           py::arg("secret_key") = py::none(), py::arg("allow_plaintext") = false, py::arg("reconnect_min") = 1.0,
           py::arg("reconnect_max") = 30.0, py::arg("install_id") = "")
      .def("next_job", &PyWorkerClient::NextJob, py::arg("timeout") = 1.0)
      .def("next_event", &PyWorkerClient::NextEvent, py::arg("timeout") = 1.0)
      .def(
          "progress",
          [](PyWorkerClient& w, const std::string& id, uint64_t token, const py::object& progress) {
            uint64_t jid = JobIdArg(id);
            std::string text = progress.is_none() ? std::string() : Dumps(progress, "progress");
            w.Call([&](WorkerClient* c) { return c->Progress(jid, token, text); });
          },
          py::arg("job_id"), py::arg("token"), py::arg("progress"))
      .def(
          "complete",
          [](PyWorkerClient& w, const std::string& id, uint64_t token, const py::object& outputs,
             const py::object& files) {
            uint64_t jid = JobIdArg(id);
            std::string out = outputs.is_none() ? std::string() : Dumps(outputs, "outputs");
            std::vector<OutputFile> fs;
            if (!files.is_none()) {
              for (const py::handle& f : files) {
                if (!py::isinstance<py::dict>(f)) throw py::value_error("each file must be a dict {path, name, mime}");
                py::dict d = py::reinterpret_borrow<py::dict>(f);
                if (!d.contains("path")) throw py::value_error("each file needs a path");
                OutputFile of;
                of.path = TextArg(d["path"], "path");
                of.name = d.contains("name") ? TextArg(d["name"], "name") : BaseName(of.path);
                of.mime = d.contains("mime") && !d["mime"].is_none() ? TextArg(d["mime"], "mime") : "";
                fs.push_back(std::move(of));
              }
            }
            w.Call([&](WorkerClient* c) { return c->Complete(jid, token, out, fs); });
          },
          py::arg("job_id"), py::arg("token"), py::kw_only(), py::arg("outputs") = py::none(),
          py::arg("files") = py::none())
      .def(
          "fail",
          [](PyWorkerClient& w, const std::string& id, uint64_t token, const py::dict& error, bool retryable) {
            uint64_t jid = JobIdArg(id);
            std::string text = Dumps(error, "error");
            w.Call([&](WorkerClient* c) { return c->Fail(jid, token, text, retryable); });
          },
          py::arg("job_id"), py::arg("token"), py::arg("error"), py::kw_only(), py::arg("retryable") = true)
      .def(
          "update_inputs",
          [](PyWorkerClient& w, const std::vector<std::string>& sha256s) {
            w.Call([&](WorkerClient* c) { return c->UpdateInputs(sha256s); });
          },
          py::arg("sha256s"),
          "Tells the host which inputs this worker keeps (at most 4096 sha256s): jobs naming them come here first.")
      .def(
          "fetch_input",
          [](PyWorkerClient& w, const std::string& id, uint64_t token, const std::string& sha256,
             const std::string& dest, double timeout) {
            uint64_t jid = JobIdArg(id);
            if (!(timeout >= 0) || timeout > 7 * 24 * 3600.0) throw py::value_error("timeout must be 0..7 days");
            uint64_t size = 0;
            w.Call([&](WorkerClient* c) {
              return c->FetchInput(jid, token, sha256, dest, static_cast<int>(timeout * 1000), &size);
            });
            return size;
          },
          py::arg("job_id"), py::arg("token"), py::arg("sha256"), py::arg("dest"), py::kw_only(),
          py::arg("timeout") = 600.0,
          "Fetches an input of a job this worker holds from the host into dest (sha256 checked); returns its size. "
          "ValueError: refused by the host (not this job's, no such input); comfymq Error (a RuntimeError): the "
          "link was lost, timed out, or the file could not be written.")
      .def(
          "confirm_cancel",
          [](PyWorkerClient& w, const std::string& id, uint64_t token) {
            uint64_t jid = JobIdArg(id);
            w.Call([&](WorkerClient* c) { return c->ConfirmCancel(jid, token); });
          },
          py::arg("job_id"), py::arg("token"))
      .def(
          "update_capabilities",
          [](PyWorkerClient& w, const py::object& caps) {
            std::string text = Dumps(caps, "capabilities");
            w.Call([&](WorkerClient* c) { return c->UpdateCapabilities(text); });
          },
          py::arg("capabilities"))
      .def("state", [](PyWorkerClient& w) { return Loads(w.client()->StateJson()); })
      .def("close", &PyWorkerClient::Close, py::arg("bye") = false)
      .def(
          "__enter__", [](PyWorkerClient& w) -> PyWorkerClient& { return w; }, py::return_value_policy::reference)
      .def("__exit__", [](PyWorkerClient& w, const py::args&) { w.Close(true); });

  py::class_<PyArtifactStream>(m, "ArtifactStream", "One artifact being written in chunks.")
      .def("write", &PyArtifactStream::Write, py::arg("data"))
      .def("commit", &PyArtifactStream::Commit)
      .def("abort", &PyArtifactStream::Abort)
      .def_property_readonly("size", &PyArtifactStream::size)
      .def(
          "__enter__", [](PyArtifactStream& s) -> PyArtifactStream& { return s; }, py::return_value_policy::reference)
      .def("__exit__", [](PyArtifactStream& s, const py::object& exc_type, const py::object&, const py::object&) {
        s.Abort();  // a stream left open by an exception (or never committed) is dropped
        return false;
      });

  py::class_<PyArtifactWriter>(m, "ArtifactWriter", "Writes artifacts atomically under a root directory.")
      .def(py::init<const std::string&>(), py::arg("root"))
      .def("write", &PyArtifactWriter::Write, py::arg("relative_path"), py::arg("data"))
      .def("open", &PyArtifactWriter::Open, py::arg("relative_path"))
      .def_property_readonly("root", &PyArtifactWriter::root)
      .def_property_readonly("stale_removed", &PyArtifactWriter::stale_removed);
}
