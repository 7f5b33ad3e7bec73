// The worker client (see comfymq/worker_client.h). One thread owns the DEALER socket and all link state;
// callers hand it commands through a queue and take jobs and events from queues of their own.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "comfymq/curve.h"
#include "comfymq/env.h"
#include "comfymq/job.h"
#include "comfymq/worker_client.h"
#include "net/event_buffer.h"
#include "net/input_fetch.h"
#include "net/protocol.h"
#include "net/wakeup_posix.h"
#include "net/zmq_frames.h"
#include "util/json_checks.h"
#include "util/json_text.h"
#include "util/process.h"
#include "util/sha256.h"

namespace comfymq {
namespace {

using json = nlohmann::json;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// What a job must be for the caller to get it: the protocol takes any valid JSON, so that a job this worker cannot
// read (too deep for its JSON readers, not an API-format graph) is answered with a failure that says why.
Status CheckJob(const proto::Message& m) {
  CMQ_RETURN_IF_ERROR(ValidatePromptJson(m.prompt_json));
  if (!m.workflow_json.empty()) CMQ_RETURN_IF_ERROR(ValidateJsonValue(m.workflow_json, "workflow"));
  if (!m.extra_json.empty()) CMQ_RETURN_IF_ERROR(ValidateJsonObject(m.extra_json, "extra"));
  return Status::OK();
}

// One ZeroMQ context for every worker client of a process (the ZeroMQ guide's rule: one context per process,
// its I/O thread serving all sockets), alive while some client uses it. A forked child gets a context of its
// own: a context does not survive fork, and the parent's is left alone.
std::shared_ptr<zmq::context_t> SharedContext() {
  static std::mutex mu;
  static std::weak_ptr<zmq::context_t> shared;
  static int64_t owner = 0;
  std::lock_guard<std::mutex> l(mu);
  std::shared_ptr<zmq::context_t> ctx = shared.lock();
  if (ctx == nullptr || owner != ProcessId()) {
    ctx = std::make_shared<zmq::context_t>();
    shared = ctx;
    owner = ProcessId();
  }
  return ctx;
}

// A result (or failure) on its way to the broker: files first, in chunks, then the RESULT; kept until the
// broker answers. Started over after a reconnect.
struct Upload {
  uint64_t job = 0, token = 0;
  bool fail = false;
  bool retryable = false;
  std::string json;  // outputs or error
  std::vector<OutputFile> files;
  // progress through the files
  size_t file = 0;
  std::unique_ptr<RandomAccessFile> in;
  uint64_t size = 0, sent = 0, acked = 0;
  bool last_sent = false;
  bool last_acked = false;  // the broker confirmed the file's final chunk
  std::unique_ptr<Sha256> hash;
  std::string sha256;
  std::vector<proto::FileEntry> entries;
  bool result_sent = false;

  void Restart() {
    file = 0;
    in.reset();
    size = sent = acked = 0;
    last_sent = last_acked = false;
    hash.reset();
    sha256.clear();
    entries.clear();
    result_sent = false;
  }
  void NextFile() {
    file++;
    RestartFile();
  }
  void RestartFile() {
    in.reset();
    size = sent = acked = 0;
    last_sent = last_acked = false;
    hash.reset();
    sha256.clear();
  }
};

// Between a caller of FetchInput and the link thread: the link passes on the chunks that arrived (in order,
// checked), the caller writes them and says how far it got (the link asks for more as room frees up).
struct FetchWait {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> chunks;  // passed on, not yet written
  bool done = false;               // no more chunks: `status` says whether all arrived
  Status status;
  uint64_t size = 0;
  std::atomic<uint64_t> consumed{0};  // bytes the caller wrote
};

struct Command {
  enum class Kind { kProgress, kComplete, kFail, kConfirmCancel, kCaps, kStop, kFetch, kFetchCancel, kInputs } kind;
  Command(Kind k, uint64_t j = 0, uint64_t t = 0, std::string text = "", std::vector<OutputFile> f = {},
          bool fl = false)
      : kind(k), job(j), token(t), json(std::move(text)), files(std::move(f)), flag(fl) {}
  uint64_t job = 0, token = 0;
  std::string json;
  std::vector<OutputFile> files;
  bool flag = false;  // retryable, or bye
  // kFetch / kFetchCancel
  uint64_t fetch = 0;
  std::shared_ptr<FetchWait> wait;
  std::vector<std::string> inputs;  // kInputs
};

// A fetch the loop runs for a waiting caller.
struct ActiveFetch {
  std::unique_ptr<net::InputFetch> fetch;
  std::shared_ptr<FetchWait> wait;
  bool started = false;  // asked the host (a fetch queued while disconnected starts on the next WELCOME)
};

class WorkerClientImpl final : public WorkerClient {
 public:
  explicit WorkerClientImpl(const WorkerClientOptions& o)
      : opt_(o), events_(100000), hb_ms_(o.heartbeat_ms), liveness_(o.liveness), caps_json_(o.capabilities_json) {}
  ~WorkerClientImpl() override { Stop(false).IgnoreError(); }

  Status Init();
  bool NextJob(int timeout_ms, JobAssignment* job) override;
  bool NextEvent(int timeout_ms, std::string* event_json) override { return events_.Next(timeout_ms, event_json); }
  Status Progress(uint64_t job_id, uint64_t token, const std::string& progress_json) override;
  Status Complete(uint64_t job_id, uint64_t token, const std::string& outputs_json,
                  const std::vector<OutputFile>& files) override;
  Status Fail(uint64_t job_id, uint64_t token, const std::string& error_json, bool retryable) override;
  Status ConfirmCancel(uint64_t job_id, uint64_t token) override;
  Status UpdateCapabilities(const std::string& capabilities_json) override;
  Status FetchInput(uint64_t job_id, uint64_t token, const std::string& sha256, const std::string& dest, int timeout_ms,
                    uint64_t* size) override;
  Status UpdateInputs(const std::vector<std::string>& sha256s) override;
  std::string StateJson() override;
  Status Stop(bool bye) override;

 private:
  enum class Phase { kDisconnected, kHandshake, kConnected };

  void Loop();
  void Connect(int64_t now);
  void Disconnect(const std::string& why, int64_t now, bool refused);
  void Handle(proto::Message& m, int64_t now);
  void RunCommands(int64_t now, bool* stop, bool* bye);
  void PumpUploads();
  void PumpFetches(int64_t now);
  // A FETCH says which chunks were read (the newest receipt): the broker sends only so many past it.
  void SendFetch(proto::Message& m) {
    m.receipt = last_receipt_;
    Send(m);
  }
  void SendInputsKept() {
    proto::Message m;
    m.cmd = proto::Cmd::kInputs;
    m.inputs = inputs_kept_;
    Send(m);
  }
  void EndFetch(uint64_t id, Status s);  // tells its caller
  bool Send(const proto::Message& m);
  void Queue(Command c);
  void Emit(const json& e) { events_.Push(Dump(e)); }
  void FreeSlot() { credit_to_send_++; }

  const WorkerClientOptions opt_;
  Env* const env_ = opt_.env != nullptr ? opt_.env : Env::Default();
  const std::shared_ptr<zmq::context_t> ctx_ = SharedContext();  // outlives socket_ (declared before it)
  std::unique_ptr<zmq::socket_t> socket_;
  net::Wakeup wake_;
  net::EventBuffer events_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::mutex stop_mu_;
  bool stopped_ = false;

  std::mutex cmd_mu_;
  std::deque<Command> commands_;

  std::mutex jobs_mu_;
  std::condition_variable jobs_cv_;
  std::deque<JobAssignment> jobs_;
  bool jobs_closed_ = false;

  // Loop thread only (StateJson reads a snapshot under state_mu_).
  Phase phase_ = Phase::kDisconnected;
  int64_t next_connect_ms_ = 0, backoff_ms_ = 0, hello_sent_ms_ = 0, last_heard_ms_ = 0, last_sent_ms_ = 0;
  int hb_ms_;
  int liveness_;
  std::string caps_json_;
  std::map<uint64_t, uint64_t> running_;  // jobs handed out and not finished: job -> token
  std::map<uint64_t, Upload> uploads_;
  std::map<uint64_t, ActiveFetch> fetches_;  // by fetch number
  std::vector<std::string> inputs_kept_;     // what INPUTS says (again after every WELCOME)
  uint64_t last_receipt_ = 0;                // the newest INPUT receipt read on this connection (FETCH echoes it)
  std::atomic<uint64_t> next_fetch_{0};
  int credit_to_send_ = 0;
  std::mutex state_mu_;
  std::string session_, refused_;
  // Random per client, the same over its reconnects: its HELLO proves a reconnect of this very process.
  const std::string instance_ = [] {
    std::random_device rd;  // the kernel's random source
    char hex[33];
    std::snprintf(hex, sizeof(hex), "%08x%08x%08x%08x", rd(), rd(), rd(), rd());
    return std::string(hex);
  }();
  uint64_t reconnects_ = 0;
};

// ---------------------------------------------------------------------------------------------------------
// Caller side

Status WorkerClientImpl::Init() {
  if (opt_.worker_id.empty() || opt_.worker_id.size() > proto::kMaxIdText) {
    return Status::InvalidArgument("worker_id must be 1..256 characters");
  }
  if (opt_.capacity < 1 || opt_.capacity > 1024) return Status::InvalidArgument("capacity must be 1..1024");
  if (opt_.heartbeat_ms < 10 || opt_.liveness < 1) return Status::InvalidArgument("heartbeat settings out of range");
  if (opt_.reconnect_min_ms < 1 || opt_.reconnect_max_ms < opt_.reconnect_min_ms) {
    return Status::InvalidArgument("reconnect backoff out of range");
  }
  CMQ_RETURN_IF_ERROR(ValidateJsonObject(opt_.capabilities_json, "capabilities"));
  CMQ_RETURN_IF_ERROR(ValidateJsonObject(opt_.info_json, "worker info"));
  if (!wake_.ok()) return Status::IOError("cannot create the worker's wakeup pipe");
  const bool curve = !opt_.broker_public_key.empty();
  if (curve) {
    if (!CurveAvailable()) return Status::InvalidArgument("this libzmq has no CURVE support (it needs libsodium)");
    CMQ_RETURN_IF_ERROR(CheckCurveKey(opt_.broker_public_key, "broker public key"));
    CMQ_RETURN_IF_ERROR(CheckCurveKey(opt_.public_key, "worker public key"));
    CMQ_RETURN_IF_ERROR(CheckCurveKey(opt_.secret_key, "worker secret key"));
  } else if (!IsLoopbackEndpoint(opt_.broker) && !opt_.allow_plaintext) {
    return Status::InvalidArgument(
        "refusing a plain-text link to " + opt_.broker +
        ": pin the broker's public key (and give this worker a key pair), or opt out explicitly");
  }
  thread_ = std::thread(&WorkerClientImpl::Loop, this);
  return Status::OK();
}

void WorkerClientImpl::Queue(Command c) {
  {
    std::lock_guard<std::mutex> l(cmd_mu_);
    commands_.push_back(std::move(c));
  }
  wake_.Notify();
}

bool WorkerClientImpl::NextJob(int timeout_ms, JobAssignment* job) {
  std::unique_lock<std::mutex> l(jobs_mu_);
  if (!jobs_cv_.wait_for(l, std::chrono::milliseconds(timeout_ms), [&] { return !jobs_.empty() || jobs_closed_; })) {
    return false;
  }
  if (jobs_.empty()) return false;
  *job = std::move(jobs_.front());
  jobs_.pop_front();
  return true;
}

Status WorkerClientImpl::Progress(uint64_t job_id, uint64_t token, const std::string& progress_json) {
  if (stopping_) return Status::IOError("worker client is stopped");
  if (progress_json.size() > (256u << 10)) return Status::InvalidArgument("progress is too large");
  if (!progress_json.empty()) CMQ_RETURN_IF_ERROR(ValidateJsonValue(progress_json, "progress"));
  Queue(Command{Command::Kind::kProgress, job_id, token, progress_json, {}, false});
  return Status::OK();
}

Status WorkerClientImpl::Complete(uint64_t job_id, uint64_t token, const std::string& outputs_json,
                                  const std::vector<OutputFile>& files) {
  if (stopping_) return Status::IOError("worker client is stopped");
  if (!outputs_json.empty()) CMQ_RETURN_IF_ERROR(ValidateJsonObject(outputs_json, "outputs"));
  if (files.size() > proto::kMaxFiles) return Status::InvalidArgument("too many output files");
  std::set<std::string> names;
  for (const OutputFile& f : files) {
    if (!proto::IsSafeFileName(f.name)) {
      return Status::InvalidArgument("output file name '" + f.name + "' must be a plain file name");
    }
    if (!names.insert(f.name).second) return Status::InvalidArgument("two output files are named '" + f.name + "'");
    FileInfo info;
    if (!env_->GetFileInfo(f.path, &info).ok() || !info.is_regular) {
      return Status::InvalidArgument("output file " + f.path + " does not exist or is not a regular file");
    }
  }
  Queue(Command{Command::Kind::kComplete, job_id, token, outputs_json, files, false});
  return Status::OK();
}

Status WorkerClientImpl::Fail(uint64_t job_id, uint64_t token, const std::string& error_json, bool retryable) {
  if (stopping_) return Status::IOError("worker client is stopped");
  CMQ_RETURN_IF_ERROR(ValidateJsonObject(error_json, "error"));
  Queue(Command{Command::Kind::kFail, job_id, token, error_json, {}, retryable});
  return Status::OK();
}

Status WorkerClientImpl::ConfirmCancel(uint64_t job_id, uint64_t token) {
  if (stopping_) return Status::IOError("worker client is stopped");
  Queue(Command{Command::Kind::kConfirmCancel, job_id, token, "", {}, false});
  return Status::OK();
}

Status WorkerClientImpl::UpdateCapabilities(const std::string& capabilities_json) {
  if (stopping_) return Status::IOError("worker client is stopped");
  CMQ_RETURN_IF_ERROR(ValidateJsonObject(capabilities_json, "capabilities"));
  Queue(Command{Command::Kind::kCaps, 0, 0, capabilities_json, {}, false});
  return Status::OK();
}

Status WorkerClientImpl::UpdateInputs(const std::vector<std::string>& sha256s) {
  if (stopping_) return Status::IOError("worker client is stopped");
  if (sha256s.size() > proto::kMaxInputsHeld) {
    return Status::InvalidArgument("at most " + std::to_string(proto::kMaxInputsHeld) + " inputs are said");
  }
  for (const std::string& sha : sha256s) {
    if (!proto::IsSha256Hex(sha)) return Status::InvalidArgument("an input's sha256 is 64 lowercase hex digits");
  }
  Command c(Command::Kind::kInputs);
  c.inputs = sha256s;
  Queue(std::move(c));
  return Status::OK();
}

Status WorkerClientImpl::FetchInput(uint64_t job_id, uint64_t token, const std::string& sha256, const std::string& dest,
                                    int timeout_ms, uint64_t* size) {
  if (stopping_) return Status::IOError("worker client is stopped");
  if (!proto::IsSha256Hex(sha256)) return Status::InvalidArgument("an input's sha256 is 64 lowercase hex digits");
  if (dest.empty()) return Status::InvalidArgument("fetch_input needs a destination path");
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max(0, timeout_ms));
  // A whole file that hashes wrong is fetched once more from its start (the host's copy may have changed under a
  // read); twice is the host's copy being damaged.
  for (int attempt = 0;; ++attempt) {
    const uint64_t id = ++next_fetch_;
    const std::string temp = dest + ".part-" + instance_.substr(0, 8) + "-" + std::to_string(id);
    std::unique_ptr<WritableFile> file;
    Status s = env_->NewWritableFile(temp, Env::OpenMode::kTruncate, &file);
    if (!s.ok()) return Status::IOError("cannot write " + temp + ": " + s.message());
    auto wait = std::make_shared<FetchWait>();
    Command c(Command::Kind::kFetch, job_id, token, sha256);
    c.fetch = id;
    c.wait = wait;
    Queue(std::move(c));
    auto give_up = [&](Status why) {
      Command cancel(Command::Kind::kFetchCancel, job_id, token);
      cancel.fetch = id;
      Queue(std::move(cancel));
      file->Close().IgnoreError();
      env_->RemoveFile(temp).IgnoreError();
      return why;
    };
    // The chunks are written and hashed here, on the caller's thread: the link thread only passes them on.
    Sha256 hash;
    uint64_t written = 0;
    for (;;) {
      std::deque<std::string> chunks;
      bool done = false;
      {
        std::unique_lock<std::mutex> l(wait->mu);
        if (!wait->cv.wait_until(l, until, [&] { return wait->done || !wait->chunks.empty(); })) {
          l.unlock();
          return give_up(Status::IOError("fetching input " + sha256 + " timed out"));
        }
        chunks.swap(wait->chunks);
        done = wait->done;
      }
      for (const std::string& chunk : chunks) {
        s = file->Append(chunk);
        if (!s.ok()) return give_up(Status::IOError("cannot write " + temp + ": " + s.message()));
        hash.Update(chunk);
        written += chunk.size();
      }
      wait->consumed = written;
      wake_.Notify();  // room in the window: the link asks for more
      if (done && chunks.empty()) break;
    }
    if (!wait->status.ok()) {  // (done: the link wrote the status before it said so, under the lock)
      file->Close().IgnoreError();
      env_->RemoveFile(temp).IgnoreError();
      return wait->status;
    }
    if (hash.HexDigest() != sha256) {
      file->Close().IgnoreError();
      env_->RemoveFile(temp).IgnoreError();
      if (attempt == 0) continue;
      return Status::IOError("input " + sha256 + " arrived twice with another sha256: the host's copy is damaged");
    }
    // Every byte arrived and its sha256 matched: made durable, then put in place.
    s = file->Sync();
    if (s.ok()) s = file->Close();
    if (s.ok()) s = env_->RenameFile(temp, dest);
    if (!s.ok()) {
      env_->RemoveFile(temp).IgnoreError();
      return Status::IOError("cannot keep input " + sha256 + " at " + dest + ": " + s.message());
    }
    const size_t slash = dest.find_last_of('/');
    env_->SyncDir(slash == std::string::npos ? "." : (slash == 0 ? "/" : dest.substr(0, slash))).IgnoreError();
    *size = written;
    return Status::OK();
  }
}

std::string WorkerClientImpl::StateJson() {
  std::lock_guard<std::mutex> l(state_mu_);
  json j = {{"connected", phase_ == Phase::kConnected},
            {"session", session_.empty() ? json(nullptr) : json(session_)},
            {"refused", refused_.empty() ? json(nullptr) : json(refused_)},
            {"running", running_.size()},
            {"uploading", uploads_.size()},
            {"reconnects", reconnects_}};
  return Dump(j);
}

Status WorkerClientImpl::Stop(bool bye) {
  {
    std::lock_guard<std::mutex> l(stop_mu_);
    if (stopped_) return Status::OK();
    stopped_ = true;
  }
  Queue(Command{Command::Kind::kStop, 0, 0, "", {}, bye});
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> l(jobs_mu_);
    jobs_closed_ = true;
  }
  jobs_cv_.notify_all();
  events_.Close();
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------------------
// The link

void WorkerClientImpl::Loop() {
  NameThisThread("cmq-worker");
  std::vector<std::string> frames;
  bool stop = false, bye = false;
  while (!stop) {
    int64_t now = NowMs();
    if (phase_ == Phase::kDisconnected && now >= next_connect_ms_) Connect(now);
    zmq::pollitem_t items[2] = {{nullptr, wake_.fd(), ZMQ_POLLIN, 0}, {nullptr, 0, ZMQ_POLLIN, 0}};
    size_t n_items = 1;
    if (socket_) items[n_items++] = {socket_->handle(), 0, ZMQ_POLLIN, 0};
    int timeout = std::max(5, hb_ms_ / 2);
    if (phase_ == Phase::kDisconnected)
      timeout = static_cast<int>(std::clamp<int64_t>(next_connect_ms_ - now, 5, timeout));
    try {
      zmq::poll(items, n_items, std::chrono::milliseconds(timeout));
    } catch (const zmq::error_t&) {
      continue;
    }
    now = NowMs();
    if (items[0].revents & ZMQ_POLLIN) wake_.Drain();
    RunCommands(now, &stop, &bye);
    if (stop) break;
    for (int i = 0; socket_ && n_items > 1 && (items[1].revents & ZMQ_POLLIN) && i < 1000; ++i) {
      bool got = false;
      try {
        got = net::RecvFrames(*socket_, &frames);
      } catch (const zmq::error_t&) {
        got = false;
      }
      if (!got) break;
      last_heard_ms_ = now;
      proto::Message m;
      Status s = proto::Decode(net::Views(frames, 0), &m, frames.size() == 3 ? &frames[2] : nullptr);
      if (!s.ok()) {
        Emit({{"type", "log"},
              {"level", "warning"},
              {"message", "dropped a malformed message from the broker: " + s.message()}});
        continue;
      }
      Handle(m, now);
      if (!socket_) break;  // refused
    }
    if (phase_ == Phase::kConnected) {
      if (credit_to_send_ > 0) {
        proto::Message ready;
        ready.cmd = proto::Cmd::kReady;
        ready.credit = static_cast<uint32_t>(credit_to_send_);
        if (Send(ready)) credit_to_send_ = 0;
      }
      PumpUploads();
      if (now - last_sent_ms_ >= hb_ms_) {
        proto::Message hb;
        hb.cmd = proto::Cmd::kHeartbeat;
        Send(hb);
      }
      if (now - last_heard_ms_ > static_cast<int64_t>(hb_ms_) * liveness_) {
        Disconnect("the broker stopped answering", now, false);
      }
    } else if (phase_ == Phase::kHandshake && now - hello_sent_ms_ > static_cast<int64_t>(hb_ms_) * liveness_) {
      Disconnect("no answer to HELLO", now, false);
    }
  }
  std::vector<uint64_t> ids;
  for (const auto& [id, a] : fetches_) ids.push_back(id);
  for (uint64_t id : ids) EndFetch(id, Status::IOError("worker client is stopped"));
  if (socket_) {
    if (bye && phase_ == Phase::kConnected) {
      proto::Message m;
      m.cmd = proto::Cmd::kBye;
      socket_->set(zmq::sockopt::linger, 1000);  // let the BYE out
      Send(m);
    }
    socket_->close();
    socket_.reset();
  }
}

void WorkerClientImpl::Connect(int64_t now) {
  try {
    socket_ = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::dealer);
    socket_->set(zmq::sockopt::linger, 0);
    socket_->set(zmq::sockopt::sndhwm, 1000);
    socket_->set(zmq::sockopt::rcvhwm, 1000);
    socket_->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(proto::kMaxBody + (1 << 20)));
    if (!opt_.broker_public_key.empty()) {
      socket_->set(zmq::sockopt::curve_serverkey, opt_.broker_public_key);
      socket_->set(zmq::sockopt::curve_publickey, opt_.public_key);
      socket_->set(zmq::sockopt::curve_secretkey, opt_.secret_key);
    }
    socket_->connect(opt_.broker);
  } catch (const zmq::error_t& e) {
    socket_.reset();
    Disconnect(std::string("cannot connect to ") + opt_.broker + ": " + e.what(), now, false);
    return;
  }
  proto::Message hello;
  hello.cmd = proto::Cmd::kHello;
  hello.worker_id = opt_.worker_id;
  hello.name = opt_.name;
  hello.plugin_version = opt_.plugin_version;
  hello.comfyui_version = opt_.comfyui_version;
  hello.capacity = static_cast<uint32_t>(opt_.capacity);
  hello.info_json = opt_.info_json;
  hello.caps_json = caps_json_;
  hello.instance = instance_;
  hello.install = opt_.install_id;
  for (const auto& [job, token] : running_) hello.held.push_back({job, token});
  for (const auto& [job, u] : uploads_) {
    if (!running_.count(job)) hello.held.push_back({job, u.token});
  }
  {
    std::lock_guard<std::mutex> l(state_mu_);
    phase_ = Phase::kHandshake;
  }
  hello_sent_ms_ = now;
  last_heard_ms_ = now;
  Send(hello);
}

void WorkerClientImpl::Disconnect(const std::string& why, int64_t now, bool refused) {
  const bool was_connected = phase_ == Phase::kConnected;
  if (socket_) {
    socket_->close();
    socket_.reset();
  }
  bool repeated = false;  // the same standing refusal again: said once, not every retry
  {
    std::lock_guard<std::mutex> l(state_mu_);
    phase_ = Phase::kDisconnected;
    if (refused) {
      repeated = refused_ == why;
      refused_ = why;
    }
  }
  backoff_ms_ = backoff_ms_ == 0 ? opt_.reconnect_min_ms : std::min<int64_t>(backoff_ms_ * 2, opt_.reconnect_max_ms);
  if (refused) backoff_ms_ = opt_.reconnect_max_ms;
  next_connect_ms_ = now + backoff_ms_;
  credit_to_send_ = 0;
  // A fetch does not outlive its link: its caller hears so at once and may try again.
  std::vector<uint64_t> ids;
  for (const auto& [id, a] : fetches_) {
    if (a.started) ids.push_back(id);
  }
  for (uint64_t id : ids) EndFetch(id, Status::IOError("the link to the host was lost (" + why + ")"));
  if (was_connected || (refused && !repeated)) {
    Emit({{"type", refused ? "refused" : "disconnected"}, {"reason", why}, {"retry_in", backoff_ms_ / 1000.0}});
  }
}

bool WorkerClientImpl::Send(const proto::Message& m) {
  if (!socket_) return false;
  last_sent_ms_ = NowMs();
  return net::SendFrames(*socket_, nullptr, proto::Encode(m));
}

void WorkerClientImpl::RunCommands(int64_t now, bool* stop, bool* bye) {
  std::deque<Command> todo;
  {
    std::lock_guard<std::mutex> l(cmd_mu_);
    todo.swap(commands_);
  }
  for (Command& c : todo) {
    switch (c.kind) {
      case Command::Kind::kProgress:
        if (phase_ == Phase::kConnected && running_.count(c.job)) {
          proto::Message m;
          m.cmd = proto::Cmd::kProgress;
          m.job_id = c.job;
          m.token = c.token;
          m.json = c.json;
          Send(m);  // progress is best-effort: a lost one is replaced by the next
        }
        break;
      case Command::Kind::kComplete:
      case Command::Kind::kFail: {
        if (running_.erase(c.job)) FreeSlot();
        Upload u;
        u.job = c.job;
        u.token = c.token;
        u.fail = c.kind == Command::Kind::kFail;
        u.retryable = c.flag;
        u.json = std::move(c.json);
        u.files = std::move(c.files);
        std::lock_guard<std::mutex> l(state_mu_);
        uploads_[c.job] = std::move(u);
        break;
      }
      case Command::Kind::kConfirmCancel:
        if (running_.erase(c.job)) FreeSlot();
        if (phase_ == Phase::kConnected) {
          proto::Message m;
          m.cmd = proto::Cmd::kCancelled;
          m.job_id = c.job;
          m.token = c.token;
          Send(m);
        }
        break;
      case Command::Kind::kCaps:
        caps_json_ = c.json;
        if (phase_ == Phase::kConnected) {
          proto::Message m;
          m.cmd = proto::Cmd::kCaps;
          m.caps_json = caps_json_;
          Send(m);
        }
        break;
      case Command::Kind::kStop:
        *stop = true;
        *bye = c.flag;
        break;
      case Command::Kind::kFetch: {
        ActiveFetch a;
        a.fetch = std::make_unique<net::InputFetch>(c.fetch, c.job, c.token, c.json);
        a.wait = std::move(c.wait);
        fetches_.emplace(c.fetch, std::move(a));
        break;
      }
      case Command::Kind::kFetchCancel: EndFetch(c.fetch, Status::IOError("the caller stopped waiting")); break;
      case Command::Kind::kInputs:
        inputs_kept_ = std::move(c.inputs);
        if (phase_ == Phase::kConnected) SendInputsKept();
        break;
    }
  }
  PumpFetches(now);
}

void WorkerClientImpl::PumpFetches(int64_t now) {
  if (phase_ != Phase::kConnected) return;
  std::vector<proto::Message> out;
  for (auto& [id, a] : fetches_) {
    if (!a.started) {
      a.started = true;
      a.fetch->Start(&out);
    } else {
      a.fetch->Tick(a.wait->consumed, now, &out);
    }
  }
  for (proto::Message& m : out) SendFetch(m);
  std::vector<uint64_t> ended;
  for (auto& [id, a] : fetches_) {
    if (a.fetch->finished()) ended.push_back(id);
  }
  for (uint64_t id : ended) EndFetch(id, fetches_.at(id).fetch->status());
}

void WorkerClientImpl::EndFetch(uint64_t id, Status s) {
  auto it = fetches_.find(id);
  if (it == fetches_.end()) return;
  ActiveFetch a = std::move(it->second);
  fetches_.erase(it);
  if (!a.fetch->finished()) a.fetch->Fail(s);
  if (a.wait == nullptr) return;
  {
    std::lock_guard<std::mutex> l(a.wait->mu);
    if (a.wait->done) return;
    a.wait->done = true;
    a.wait->status = a.fetch->status();
    a.wait->size = a.fetch->size();
  }
  a.wait->cv.notify_all();
}

void WorkerClientImpl::Handle(proto::Message& m, int64_t now) {
  switch (m.cmd) {
    case proto::Cmd::kWelcome: {
      {
        std::lock_guard<std::mutex> l(state_mu_);
        phase_ = Phase::kConnected;
        if (!session_.empty() && session_ != m.session) reconnects_++;
        session_ = m.session;
        refused_.clear();
      }
      last_receipt_ = 0;  // receipts are per connection
      hb_ms_ = static_cast<int>(m.heartbeat_ms);
      liveness_ = static_cast<int>(m.liveness);
      backoff_ms_ = 0;
      for (const proto::Held& h : m.dropped) {
        // No longer ours: stop it, and forget any result of it (it would be refused).
        bool had = false;
        auto r = running_.find(h.job_id);
        if (r != running_.end() && r->second == h.token) {
          running_.erase(r);
          had = true;
          Emit({{"type", "cancel"},
                {"job_id", FormatJobId(h.job_id)},
                {"token", h.token},
                {"reason", "the lease was lost while disconnected"}});
        }
        auto u = uploads_.find(h.job_id);
        if (u != uploads_.end() && u->second.token == h.token) {
          std::lock_guard<std::mutex> l(state_mu_);
          uploads_.erase(u);
          Emit({{"type", "nack"},
                {"job_id", FormatJobId(h.job_id)},
                {"reason", "the lease was lost while disconnected"}});
        }
        (void)had;
      }
      for (auto& [job, u] : uploads_) u.Restart();  // results in flight are sent again, from the start
      credit_to_send_ = std::max(0, opt_.capacity - static_cast<int>(running_.size()));
      if (!inputs_kept_.empty()) SendInputsKept();  // before READY: the broker knows them when it dispatches
      Emit({{"type", "connected"}, {"session", m.session}});
      break;
    }
    case proto::Cmd::kRefuse:
      // "busy: ..." is for now (our id is still connected on a link the broker has not let go): try again on the
      // usual backoff, not the long one of a refusal that stands.
      if (phase_ == Phase::kHandshake && m.reason.rfind("busy:", 0) == 0) {
        Disconnect("refused by the broker: " + m.reason, now, false);
        Emit({{"type", "refused"},
              {"reason", "refused by the broker: " + m.reason},
              {"retry_in", backoff_ms_ / 1000.0}});
        break;
      }
      // a refusal at HELLO stands, and so does the removal of our key (the reconnects' ZAP failures say nothing)
      Disconnect("refused by the broker: " + m.reason, now,
                 phase_ == Phase::kHandshake || m.reason == proto::kKeyRemoved);
      if (phase_ != Phase::kHandshake && m.reason.find("HELLO") != std::string::npos) {
        next_connect_ms_ = now;  // the broker forgot us (it restarted): say HELLO again at once
      }
      break;
    case proto::Cmd::kJob: {
      if (running_.count(m.job_id)) break;  // already ours
      Status runnable = CheckJob(m);
      if (!runnable.ok()) {
        // Never handed to the caller (it could not read it): failed at once, not retried, with the reason; its
        // slot is free again.
        Upload u;
        u.job = m.job_id;
        u.token = m.token;
        u.fail = true;
        u.json = Dump({{"type", "invalid_job"},
                       {"message", "worker " + opt_.worker_id + " cannot run this job: " + runnable.message()}});
        {
          std::lock_guard<std::mutex> l(state_mu_);
          uploads_[m.job_id] = std::move(u);
        }
        FreeSlot();
        Emit({{"type", "log"},
              {"level", "warning"},
              {"message", "refused job " + FormatJobId(m.job_id) + " (failed it): " + runnable.message()}});
        break;
      }
      running_[m.job_id] = m.token;
      JobAssignment a;
      a.job_id = m.job_id;
      a.token = m.token;
      a.attempt = static_cast<int>(m.attempt);
      a.timeout_ms = m.timeout_ms;
      a.prompt_json = m.prompt_json;
      a.workflow_json = m.workflow_json;
      a.extra_json = m.extra_json;
      {
        std::lock_guard<std::mutex> l(jobs_mu_);
        jobs_.push_back(std::move(a));
      }
      jobs_cv_.notify_one();
      break;
    }
    case proto::Cmd::kPing: break;
    case proto::Cmd::kCancel: {
      auto r = running_.find(m.job_id);
      if (r != running_.end() && r->second == m.token) {
        Emit({{"type", "cancel"}, {"job_id", FormatJobId(m.job_id)}, {"token", m.token}, {"reason", m.reason}});
        break;
      }
      auto u = uploads_.find(m.job_id);
      if (u != uploads_.end() && u->second.token == m.token) {
        std::lock_guard<std::mutex> l(state_mu_);
        uploads_.erase(u);
        Emit({{"type", "nack"}, {"job_id", FormatJobId(m.job_id)}, {"reason", m.reason}});
      }
      break;
    }
    case proto::Cmd::kAck: {
      auto u = uploads_.find(m.job_id);
      if (u == uploads_.end() || u->second.token != m.token) break;
      if (m.ack == proto::AckKind::kResendFiles) {
        u->second.Restart();
        break;
      }
      {
        std::lock_guard<std::mutex> l(state_mu_);
        uploads_.erase(u);
      }
      // One per job: written as text rather than built as a document.
      events_.Push(JsonObjectText()
                       .Str("job_id", FormatJobId(m.job_id))
                       .Str("kind", m.ack == proto::AckKind::kRecorded ? "recorded" : "duplicate")
                       .Str("type", "ack")
                       .Done());
      break;
    }
    case proto::Cmd::kNack: {
      auto u = uploads_.find(m.job_id);
      if (u == uploads_.end() || u->second.token != m.token) break;
      {
        std::lock_guard<std::mutex> l(state_mu_);
        uploads_.erase(u);
      }
      Emit({{"type", "nack"}, {"job_id", FormatJobId(m.job_id)}, {"reason", m.reason}});
      break;
    }
    case proto::Cmd::kChunkAck: {
      auto it = uploads_.find(m.job_id);
      if (it == uploads_.end() || it->second.token != m.token || it->second.file != m.file_index) break;
      Upload& u = it->second;
      switch (m.chunk_status) {
        case proto::ChunkStatus::kOk:
          if (m.offset > u.sent) break;  // for bytes of an earlier start of the file (we started it over since)
          u.acked = std::max(u.acked, m.offset);
          if (u.last_sent && m.offset == u.size) u.last_acked = true;
          break;
        case proto::ChunkStatus::kResume:
          u.RestartFile();  // our hash cannot rewind: send the file again from its start
          break;
        case proto::ChunkStatus::kRefused: {
          // The host will not take this file (lease gone, or it cannot store it): report a failure instead.
          u.fail = true;
          u.retryable = true;
          u.json = Dump(
              {{"type", "upload_refused"}, {"message", "the host refused the output file " + u.files[u.file].name}});
          u.files.clear();
          u.Restart();
          break;
        }
      }
      break;
    }
    case proto::Cmd::kCapsRequest: Emit({{"type", "caps_request"}}); break;
    case proto::Cmd::kInput: {
      if (m.receipt != 0) last_receipt_ = m.receipt;  // read: the broker may send more
      auto it = fetches_.find(m.fetch);
      if (it == fetches_.end() || m.file_sha256 != it->second.fetch->sha256()) break;  // ended (or not ours)
      std::vector<proto::Message> out;
      std::string data;
      it->second.fetch->OnInput(m, now, &out, &data);
      for (proto::Message& f : out) SendFetch(f);
      if (!data.empty()) {
        std::lock_guard<std::mutex> l(it->second.wait->mu);
        it->second.wait->chunks.push_back(std::move(data));
      }
      it->second.wait->cv.notify_all();
      if (it->second.fetch->finished()) EndFetch(m.fetch, it->second.fetch->status());
      break;
    }
    default: break;
  }
}

void WorkerClientImpl::PumpUploads() {
  for (auto it = uploads_.begin(); it != uploads_.end(); ++it) {
    Upload& u = it->second;
    if (u.result_sent) continue;
    while (!u.fail && u.file < u.files.size()) {
      const OutputFile& f = u.files[u.file];
      if (!u.in) {
        Status s = env_->NewRandomAccessFile(f.path, &u.in);
        if (s.ok()) s = u.in->Size(&u.size);
        if (!s.ok()) {
          u.fail = true;
          u.retryable = true;
          u.json = Dump({{"type", "output_missing"},
                         {"message", "output file " + f.path + " could not be read: " + s.message()}});
          u.files.clear();
          u.Restart();
          break;
        }
        u.hash = std::make_unique<Sha256>();
      }
      // Send within the window.
      bool blocked = false;
      while (!u.last_sent && u.sent - u.acked < static_cast<uint64_t>(proto::kChunkWindow) * proto::kChunkBytes) {
        const uint64_t n = std::min<uint64_t>(proto::kChunkBytes, u.size - u.sent);
        proto::Message c;
        c.cmd = proto::Cmd::kChunk;
        c.job_id = u.job;
        c.token = u.token;
        c.file_index = static_cast<uint32_t>(u.file);
        c.file_name = f.name;
        c.file_size = u.size;
        c.offset = u.sent;
        Status s = u.in->Read(u.sent, static_cast<size_t>(n), &c.data);
        if (!s.ok() || c.data.size() != n) {
          u.fail = true;
          u.retryable = true;
          u.json =
              Dump({{"type", "output_missing"}, {"message", "output file " + f.path + " changed while it was sent"}});
          u.files.clear();
          u.Restart();
          blocked = true;
          break;
        }
        c.chunk_checksum = proto::ChunkChecksum(c.data);
        u.hash->Update(c.data);
        c.last = u.sent + n == u.size;
        if (c.last) {
          u.sha256 = u.hash->HexDigest();
          c.file_sha256 = u.sha256;
        }
        if (!Send(c)) {
          // The queue is full: try again next turn (the hash already took this chunk, so start the file over).
          u.RestartFile();
          blocked = true;
          break;
        }
        u.sent += n;
        if (c.last) u.last_sent = true;
      }
      if (blocked) break;
      if (u.last_acked) {
        u.entries.push_back(proto::FileEntry{f.name, u.size, u.sha256, f.mime});
        u.NextFile();
        continue;
      }
      break;  // waiting for acks
    }
    if (u.fail || u.file == u.files.size()) {
      proto::Message m;
      m.job_id = u.job;
      m.token = u.token;
      m.json = u.json;
      if (u.fail) {
        m.cmd = proto::Cmd::kFail;
        m.retryable = u.retryable;
      } else {
        m.cmd = proto::Cmd::kResult;
        m.files = u.entries;
      }
      if (Send(m)) u.result_sent = true;
    }
  }
}

}  // namespace

Status WorkerClient::Start(const WorkerClientOptions& options, std::unique_ptr<WorkerClient>* client) {
  auto impl = std::make_unique<WorkerClientImpl>(options);
  CMQ_RETURN_IF_ERROR(impl->Init());
  *client = std::move(impl);
  return Status::OK();
}

}  // namespace comfymq
