// Unrunnable-backlog benchmark (part of comfymq_bench, `--only unrunnable`): one host, the durable store and the
// broker in this process, with 100 and 300 idle simulated workers (scale_farm.h) and a backlog of 30,000 pending
// jobs that none of them can run (half name a checkpoint no worker has, half a node class none has). Then runnable
// jobs of another owner arrive, one every 20 ms, and each is run at once by a farm. Per size it prints:
//   - unrunnable_idle_cpu_pct_of_core: the host process's CPU over 5 s with the backlog and no arrival, with the
//     commit threads' (the broker's passes) and the broker thread's shares;
//   - unrunnable_enqueue_p99_us: Store::Enqueue of a runnable job called -> returned (its commit group, with the
//     dispatch on arrival made inside it, and its sync), against the disk's raw write + fdatasync; with p50, the
//     enqueue -> JOB read in the farm latency, and the CPU of the host over the arrivals.
// COMFYMQ_UNRUNNABLE_WORKERS="1000" (comma-separated) measures other sizes; --scale scales the backlog and arrivals.
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "comfymq/broker.h"
#include "comfymq/store.h"
#include "scale_farm.h"

namespace comfymq::bench {
namespace {

using json = nlohmann::json;

constexpr int kFarms = 4;             // farms[0] holds the first 100 workers, the others the rest
constexpr double kArrivalGapMs = 20;  // one runnable job every 20 ms
constexpr double kMaxArrivalSeconds = 30;

// A prompt no farm worker can run: a checkpoint none has (odd seeds) or a node class none has (even seeds).
std::string UnrunnablePrompt(uint64_t seed) {
  json p = json::parse(MakePrompt(seed));
  if (seed % 2 == 1) {
    p["4"]["inputs"]["ckpt_name"] = "checkpoints/nobody/has_this_" + std::to_string(seed % 97) + ".safetensors";
  } else {
    p["10"] = {{"class_type", "NoWorkerHasThisNode"}, {"inputs", {{"strength", 0.5}, {"image", {"8", 0}}}}};
  }
  return p.dump();
}

// Waits for `n` succeeded jobs, at most `seconds`; false when they did not all finish.
bool WaitSucceededFor(Store* store, uint64_t n, double seconds) {
  const double deadline = NowSeconds() + seconds;
  while (Succeeded(store) < n) {
    if (NowSeconds() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

void RunSize(const std::string& base, int workers, int backlog, int arrivals, const std::vector<FarmProcess*>& farms) {
  std::vector<pid_t> pids;
  for (FarmProcess* f : farms) pids.push_back(f->pid());
  ScratchDir dir(base, "unrunnable");
  std::unique_ptr<Store> store;
  std::unique_ptr<Broker> broker;
  Must(Store::Open(StoreOptions(), dir.path() + "/store", &store), "open the store");
  BrokerOptions bo;
  bo.bind = "tcp://127.0.0.1:*";
  bo.artifact_root = dir.path() + "/artifacts";
  bo.heartbeat_ms = kHeartbeatMs;
  bo.liveness = kLiveness;
  Must(Broker::Start(store.get(), bo, &broker), "start the broker");

  // The backlog is queued while the queue is paused (its arrival is not what is measured), then the workers join.
  const double q0 = NowSeconds();
  Must(store->SetPaused(true), "pause the queue");
  for (int queued = 0; queued < backlog; queued += 1000) {
    std::vector<NewJob> batch(static_cast<size_t>(std::min(1000, backlog - queued)));
    for (size_t i = 0; i < batch.size(); ++i) {
      batch[i].prompt = UnrunnablePrompt(static_cast<uint64_t>(queued) + i);
      batch[i].owner = "backlog";
    }
    std::vector<EnqueueResult> rs;
    Must(store->EnqueueMany(batch, &rs), "enqueue the backlog");
  }
  JoinFarms(farms, broker->endpoint(), workers, false);
  Must(store->SetPaused(false), "resume the queue");
  const double setup_s = NowSeconds() - q0;
  std::this_thread::sleep_for(std::chrono::seconds(3));  // the first passes over the backlog
  DrainEvents(broker.get());

  const CpuMark i0(pids);
  std::this_thread::sleep_for(std::chrono::seconds(5));
  const CpuMark i1(pids);
  const double idle_s = i1.t - i0.t;
  Emit("unrunnable", "idle_cpu_pct_of_core", 100 * (i1.process - i0.process) / idle_s, "%", "", 0,
       json{{"workers", workers},
            {"backlog", backlog},
            {"seconds", idle_s},
            {"commit_threads_pct", 100 * (i1.commit - i0.commit) / idle_s},
            {"broker_thread_pct", 100 * (i1.broker - i0.broker) / idle_s},
            {"setup_s", setup_s}}
           .dump());

  std::vector<double> raw = RawFdatasyncUs(dir.path(), 100);
  std::map<uint64_t, int64_t> enqueued;
  std::vector<double> enqueue_us;
  const CpuMark a(pids);
  const int64_t start = SteadyNs();
  for (int i = 0; i < arrivals; ++i) {
    const int64_t due = start + static_cast<int64_t>(i * kArrivalGapMs * 1e6);
    std::this_thread::sleep_until(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(due)));
    if (static_cast<double>(SteadyNs() - start) / 1e9 > kMaxArrivalSeconds) break;  // far behind: enough samples
    NewJob j;
    j.prompt = MakePrompt(1000000 + static_cast<uint64_t>(i));
    j.owner = "arrivals";
    EnqueueResult r;
    const int64_t t = SteadyNs();
    Must(store->Enqueue(j, &r), "enqueue");
    enqueue_us.push_back(static_cast<double>(SteadyNs() - t) / 1000);
    enqueued[r.id] = t;
  }
  const bool all_ran = WaitSucceededFor(store.get(), enqueued.size(), 120);
  const CpuMark b(pids);
  for (double us : RawFdatasyncUs(dir.path(), 100)) raw.push_back(us);
  std::map<uint64_t, int64_t> received;
  for (FarmProcess* f : farms) f->Received(&received);
  std::vector<double> dispatch_us;
  for (const auto& [job, t] : enqueued) {
    auto it = received.find(job);
    if (it != received.end()) dispatch_us.push_back(static_cast<double>(it->second - t) / 1000);
  }
  const double secs = b.t - a.t;
  Emit("unrunnable", "enqueue_p99_us", Percentile(enqueue_us, 99), "us", "raw_fdatasync_p99_us", Percentile(raw, 99),
       json{{"workers", workers},
            {"backlog", backlog},
            {"arrivals", enqueue_us.size()},
            {"all_ran", all_ran},
            {"enqueue_p50_us", Percentile(enqueue_us, 50)},
            {"enqueue_max_us", Percentile(enqueue_us, 100)},
            {"dispatch_p50_us", Percentile(dispatch_us, 50)},
            {"dispatch_p99_us", Percentile(dispatch_us, 99)},
            {"raw_fdatasync_p50_us", Percentile(raw, 50)},
            {"seconds", secs},
            {"commit_threads_cores", (b.commit - a.commit) / secs},
            {"broker_thread_cores", (b.broker - a.broker) / secs},
            {"host_process_cores", (b.process - a.process) / secs}}
           .dump());
  for (FarmProcess* f : farms) {
    f->Tell("leave");
    f->Line();
  }
  broker.reset();
  store.reset();
}

}  // namespace

void BenchUnrunnable(const std::string& base, double scale) {
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < 8192) {
    nofile.rlim_cur = std::min<rlim_t>(nofile.rlim_max, 8192);
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  signal(SIGPIPE, SIG_IGN);
  std::vector<std::unique_ptr<FarmProcess>> owned;
  std::vector<FarmProcess*> farms;
  for (int i = 0; i < kFarms; ++i) {
    owned.push_back(std::make_unique<FarmProcess>());
    farms.push_back(owned.back().get());
  }
  std::vector<int> sizes = {100, 300};
  if (const char* env = std::getenv("COMFYMQ_UNRUNNABLE_WORKERS")) {
    sizes.clear();
    std::istringstream in(env);
    for (std::string n; std::getline(in, n, ',');) sizes.push_back(std::max(1, std::atoi(n.c_str())));
  }
  const int backlog = std::max(1000, static_cast<int>(30000 * scale));
  const int arrivals = std::max(50, static_cast<int>(500 * scale));
  for (int workers : sizes) RunSize(base, workers, backlog, arrivals, farms);
}

}  // namespace comfymq::bench
