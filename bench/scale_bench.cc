// Scale benchmark (part of comfymq_bench, `--only scale`): one host, the durable store and the broker in this
// process, with 100, 300 and 1,000 simulated workers connected over loopback tcp.
//
// The workers come from scale_farm.h (farm processes of light simulated workers). Per size it prints:
//   - idle_cpu_pct_of_core: the host process's CPU over 10 s of heartbeats with no job (target < 10% of a core),
//     with the broker thread's and ZeroMQ's I/O thread's shares and the broker thread's CPU per message;
//   - dispatch_p99_us: Store::Enqueue called (its fdatasync included) -> the JOB read in the farm (target 5 ms);
//   - noop_jobs_per_s: jobs queued while the queue is paused, then run with every worker busy;
//   - rss_per_worker_kib: the host's RSS growth over the workers' joining and 10 s of idle, per worker;
//   - dead_workers_noticed_ms: SIGKILL of the farm holding 100 -> the broker's 100th "left" (target 3 heartbeats).
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "bench_util.h"
#include "comfymq/broker.h"
#include "comfymq/store.h"
#include "net/protocol.h"
#include "net/zmq_frames.h"
#include "scale_farm.h"

namespace comfymq::bench {
namespace {

using json = nlohmann::json;

constexpr int kOtherFarms = 3;  // farms that hold the rest
constexpr double kIdleSeconds = 10;

// The baseline for memory: KiB of this process's RSS per connection of a bare ROUTER with the broker's socket
// options, sent the same HELLO bytes and answering each once: what a worker costs in ZeroMQ alone.
double RawRouterKibPerConnection(const std::vector<FarmProcess*>& farms, int workers) {
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::router_mandatory, 1);
  router.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::sndhwm, 100000);
  router.set(zmq::sockopt::rcvhwm, 100000);
  router.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(proto::kMaxBody + (1 << 20)));
  router.bind("tcp://127.0.0.1:*");
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);
  std::atomic<bool> stop{false};
  std::thread answer([&] {
    std::vector<std::string> frames;
    while (!stop) {
      zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(50));
      while (net::RecvFrames(router, &frames)) net::SendFrames(router, &frames[0], {"ok"});
    }
  });
  malloc_trim(0);
  const double rss0 = RssMiB();
  JoinFarms(farms, endpoint, workers, true);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const double rss1 = RssMiB();
  for (FarmProcess* f : farms) {
    f->Tell("leave");
    f->Line();
  }
  stop = true;
  answer.join();
  return (rss1 - rss0) * 1024 / workers;
}

// One farm size: a fresh store and broker, `workers` simulated workers (the first min(100, workers) in the farm
// that is killed, the rest shared by the others), and the measurements in order.
class ScaleRun {
 public:
  ScaleRun(const std::string& base, int workers, const std::vector<FarmProcess*>& farms)
      : dir_(base, "scale"), workers_(workers), in_killed_(std::min(kKilled, workers)), farms_(farms) {
    Must(Store::Open(StoreOptions(), dir_.path() + "/store", &store_), "open the store");
    BrokerOptions bo;
    bo.bind = "tcp://127.0.0.1:*";
    bo.artifact_root = dir_.path() + "/artifacts";
    bo.heartbeat_ms = kHeartbeatMs;
    bo.liveness = kLiveness;
    Must(Broker::Start(store_.get(), bo, &broker_), "start the broker");
    for (FarmProcess* f : farms_) pids_.push_back(f->pid());
  }
  ~ScaleRun() {
    for (size_t i = 1; i < farms_.size(); ++i) {
      farms_[i]->Tell("leave");
      farms_[i]->Line();
    }
    broker_.reset();
    store_.reset();
  }

  // Every worker says HELLO; measured from before the first until the last is welcomed, then 2 s to settle
  // (every worker's first heartbeat and PING, the first passes). Then 10 s with no job: CPU, and memory against
  // `raw_kib`, what a bare ROUTER's connection costs (RawRouterKibPerConnection).
  void JoinAndIdle(double raw_kib) {
    malloc_trim(0);
    const double rss0 = RssMiB();
    const double t0 = NowSeconds();
    JoinFarms(farms_, broker_->endpoint(), workers_, false);
    const double join_s = NowSeconds() - t0;
    std::this_thread::sleep_for(std::chrono::seconds(2));
    DrainEvents(broker_.get());

    const uint64_t msgs0 = broker_->Counters().messages_in;
    const CpuMark a(pids_);
    std::this_thread::sleep_for(std::chrono::duration<double>(kIdleSeconds));
    const CpuMark b(pids_);
    const double rss1 = RssMiB();
    malloc_trim(0);  // what the allocator keeps free is not the workers' (the HELLOs' texts, parsed and dropped)
    const double rss2 = RssMiB();
    const double secs = b.t - a.t;
    const double msgs = static_cast<double>(broker_->Counters().messages_in - msgs0);
    Emit("scale", "idle_cpu_pct_of_core", 100 * (b.process - a.process) / secs, "%", "target_10pct", 10,
         json{{"workers", workers_},
              {"seconds", secs},
              {"broker_thread_pct", 100 * (b.broker - a.broker) / secs},
              {"zmq_io_thread_pct", 100 * (b.zmq - a.zmq) / secs},
              {"messages_in_per_s", msgs / secs},
              {"broker_thread_us_per_message_in", msgs > 0 ? (b.broker - a.broker) * 1e6 / msgs : 0},
              {"farms_pct", 100 * (b.farms - a.farms) / secs},
              {"join_s", join_s}}
             .dump());
    Emit("scale", "rss_per_worker_kib", (rss1 - rss0) * 1024 / workers_, "KiB", "raw_zmq_router_kib_per_connection",
         raw_kib,
         json{{"workers", workers_},
              {"rss_before_mib", rss0},
              {"rss_after_mib", rss1},
              {"kib_per_worker_after_malloc_trim", (rss2 - rss0) * 1024 / workers_},
              {"capability_sets", kCapsVariants},
              {"capabilities_bytes", MakeCapabilities(0).size()}}
             .dump());
  }

  // One job every 3 ms to a farm of idle workers: Enqueue called -> JOB read in a farm. The disk's own
  // write + fdatasync time is measured right before and after, on the same disk.
  void DispatchLatency(int samples) {
    std::vector<double> raw = RawFdatasyncUs(dir_.path(), 100);
    std::map<uint64_t, int64_t> enqueued;
    const CpuMark a(pids_);
    for (int i = 0; i < samples; ++i) {
      NewJob j;
      j.prompt = MakePrompt(static_cast<uint64_t>(i));
      EnqueueResult r;
      const int64_t t = SteadyNs();
      Must(store_->Enqueue(j, &r), "enqueue");
      enqueued[r.id] = t;
      std::this_thread::sleep_until(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(t + 3000000)));
    }
    done_ += static_cast<uint64_t>(samples);
    WaitSucceeded(store_.get(), done_, "the dispatch-latency jobs");
    const CpuMark b(pids_);
    for (double us : RawFdatasyncUs(dir_.path(), 100)) raw.push_back(us);
    std::map<uint64_t, int64_t> received;
    for (FarmProcess* f : farms_) f->Received(&received);
    std::vector<double> lat;
    for (const auto& [job, t] : enqueued) {
      auto it = received.find(job);
      if (it != received.end()) lat.push_back(static_cast<double>(it->second - t) / 1000);
    }
    Emit("scale", "dispatch_p99_us", Percentile(lat, 99), "us", "target_5ms", 5000,
         json{{"workers", workers_},
              {"p50_us", Percentile(lat, 50)},
              {"max_us", Percentile(lat, 100)},
              {"samples", lat.size()},
              {"raw_fdatasync_p50_us", Percentile(raw, 50)},
              {"raw_fdatasync_p99_us", Percentile(raw, 99)},
              {"broker_thread_cores", (b.broker - a.broker) / (b.t - a.t)},
              {"host_process_cores", (b.process - a.process) / (b.t - a.t)}}
             .dump());
    DrainEvents(broker_.get());
  }

  // `total` jobs queued while the queue is paused, then run with every worker busy until none is left.
  double Throughput(int total, double at_100) {
    Must(store_->SetPaused(true), "pause the queue");
    for (int queued = 0; queued < total; queued += 1000) {
      std::vector<NewJob> batch(static_cast<size_t>(std::min(1000, total - queued)));
      for (size_t i = 0; i < batch.size(); ++i) batch[i].prompt = MakePrompt(static_cast<uint64_t>(queued) + i);
      std::vector<EnqueueResult> rs;
      Must(store_->EnqueueMany(batch, &rs), "enqueue a batch");
    }
    const CpuMark a(pids_);
    Must(store_->SetPaused(false), "resume the queue");
    done_ += static_cast<uint64_t>(total);
    WaitSucceeded(store_.get(), done_, "the throughput jobs");
    const CpuMark b(pids_);
    const double secs = b.t - a.t, jobs_per_s = total / secs;
    Emit("scale", "noop_jobs_per_s", jobs_per_s, "jobs/s", at_100 > 0 ? "noop_jobs_per_s_at_100_workers" : "", at_100,
         json{{"workers", workers_},
              {"jobs", total},
              {"broker_thread_cores", (b.broker - a.broker) / secs},
              {"zmq_io_thread_cores", (b.zmq - a.zmq) / secs},
              {"host_process_cores", (b.process - a.process) / secs},
              {"farms_cores", (b.farms - a.farms) / secs}}
             .dump());
    std::map<uint64_t, int64_t> forgotten;  // only the latency jobs are timed
    for (FarmProcess* f : farms_) f->Received(&forgotten);
    DrainEvents(broker_.get());
    return jobs_per_s;
  }

  // The farm holding 100 workers is SIGKILLed: how long until the broker has let every one of them go?
  void KillHundred() {
    std::this_thread::sleep_for(std::chrono::seconds(2));  // heartbeats only again
    DrainEvents(broker_.get());
    const double t0 = NowSeconds();
    farms_[0]->Kill();
    double first_ms = -1, last_ms = -1, silent_ms = 0;
    int noticed = 0;
    std::string e;
    while (noticed < in_killed_ && NowSeconds() - t0 < 15) {
      if (!broker_->NextEvent(100, &e)) continue;
      json j = json::parse(e, nullptr, false);
      if (!j.is_object() || j.value("type", "") != "worker" || j.value("event", "") != "left") continue;
      last_ms = (NowSeconds() - t0) * 1000;
      if (noticed++ == 0) first_ms = last_ms;
      // "worker W stopped answering (no message for N ms)": how long the broker heard nothing before it let go.
      const std::string reason = j.value("reason", "");
      const size_t at = reason.find("no message for ");
      if (at != std::string::npos) silent_ms = std::max(silent_ms, std::atof(reason.c_str() + at + 15));
    }
    Emit("scale", "dead_workers_noticed_ms", last_ms, "ms", "three_heartbeats_ms", 3.0 * kHeartbeatMs,
         json{{"workers", workers_},
              {"killed", in_killed_},
              {"noticed", noticed},
              {"first_noticed_ms", first_ms},
              {"longest_silence_ms", silent_ms},
              {"heartbeat_ms", kHeartbeatMs},
              {"liveness", kLiveness}}
             .dump());
  }

 private:
  ScratchDir dir_;
  const int workers_, in_killed_;
  const std::vector<FarmProcess*> farms_;  // the one killed first
  std::vector<pid_t> pids_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Broker> broker_;
  uint64_t done_ = 0;  // jobs run so far
};

}  // namespace

void BenchScale(const std::string& base, double scale) {
  // 1,000 links in the host and a few hundred sockets (each with its own mailbox) in every farm.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < 8192) {
    nofile.rlim_cur = std::min<rlim_t>(nofile.rlim_max, 8192);
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  signal(SIGPIPE, SIG_IGN);
  std::vector<std::unique_ptr<FarmProcess>> others;
  for (int i = 0; i < kOtherFarms; ++i) others.push_back(std::make_unique<FarmProcess>());
  // COMFYMQ_SCALE_WORKERS="3000" (sizes, comma-separated) measures other sizes than 100, 300 and 1,000.
  std::vector<int> sizes = {100, 300, 1000};
  if (const char* env = std::getenv("COMFYMQ_SCALE_WORKERS")) {
    sizes.clear();
    std::istringstream in(env);
    for (std::string n; std::getline(in, n, ',');) sizes.push_back(std::max(1, std::atoi(n.c_str())));
  }
  double at_100 = 0;
  for (int workers : sizes) {
    FarmProcess killed;
    std::vector<FarmProcess*> farms = {&killed};
    for (auto& f : others) farms.push_back(f.get());
    const double raw_kib = RawRouterKibPerConnection(farms, workers);
    ScaleRun run(base, workers, farms);
    run.JoinAndIdle(raw_kib);
    run.DispatchLatency(std::max(100, static_cast<int>(1000 * scale)));
    const double jobs_per_s = run.Throughput(std::max(1000, static_cast<int>(20000 * scale)), at_100);
    if (workers == 100) at_100 = jobs_per_s;
    run.KillHundred();
  }
}

}  // namespace comfymq::bench
