// ComfyMQ core benchmarks (`make bench`). Prints one JSON line per figure:
//   {"bench", "metric", "value", "unit", "baseline", "baseline_value", "ratio", ...parameters}
// Baselines run in the same process, on the same disk, right before or after the measured code:
//   - raw append + fdatasync loop, and SQLite (WAL, synchronous=FULL) doing the same inserts;
//   - a plain write + fsync + rename of the same bytes, for the artifact writer.
// Nothing here asserts on time. Usage: comfymq_bench [--dir DIR] [--only NAME] [--scale F]
// The cluster benchmarks are in cluster_bench.cc, one host with 100 to 1,000 workers in scale_bench.cc.
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "comfymq/artifact_writer.h"
#include "comfymq/store.h"
#include "testing/api_prompts.h"
#include "util/thread_priority.h"

using namespace comfymq;
using namespace comfymq::bench;

namespace comfymq::bench {
void BenchClusterLatency(const std::string& base, double scale);     // cluster_bench.cc
void BenchClusterThroughput(const std::string& base, double scale);  // cluster_bench.cc
void BenchInputTransfer(const std::string& base, double scale);      // cluster_bench.cc
void BenchScale(const std::string& base, double scale);              // scale_bench.cc
void BenchUnrunnable(const std::string& base, double scale);         // unrunnable_bench.cc
int ScaleFarmMain();                                                 // scale_farm.cc: a farm of workers
}  // namespace comfymq::bench

namespace {

std::string g_dir = "build/bench-data";
double g_scale = 1.0;

size_t Scaled(size_t n) { return std::max<size_t>(1, static_cast<size_t>(static_cast<double>(n) * g_scale)); }

// The prompts a run enqueues: realistic API-format graphs (api_prompts.h), made once per size before any timed
// loop; job n uses Prompts(size)[n % pool]. Ours, SQLite and the raw baseline all write the same bytes.
const std::vector<std::string>& Prompts(size_t size) {
  static std::mutex mu;
  static std::map<size_t, std::vector<std::string>> pools;
  std::lock_guard<std::mutex> lock(mu);
  auto it = pools.find(size);
  if (it == pools.end()) it = pools.emplace(size, MakeApiPromptPool(256, size, size)).first;
  return it->second;
}

const std::string& PromptFor(const std::vector<std::string>& pool, uint64_t n) { return pool[n % pool.size()]; }

void Die(const Status& s, const char* what) {
  std::cerr << what << ": " << s.ToString() << std::endl;
  std::exit(1);
}

StoreOptions BenchOptions() {
  StoreOptions o;
  o.background_thread = true;
  return o;
}

// ---- durable enqueue ----------------------------------------------------------------------------------

// The process's CPU time over a run, per job, and how many of the machine's cores that kept busy.
struct RunCpu {
  double us_per_job = 0;
  double cores = 0;
};

double OursEnqueue(const std::string& dir, int producers, size_t per, size_t size, std::vector<double>* lat_us,
                   bool raise_priority = true, RunCpu* cpu = nullptr) {
  std::unique_ptr<Store> store;
  StoreOptions options = BenchOptions();
  options.raise_log_writer_priority = raise_priority;
  Status s = Store::Open(options, dir, &store);
  if (!s.ok()) Die(s, "open");
  std::vector<std::vector<double>> lats(producers);
  std::atomic<uint64_t> seq{0};
  const auto& pool = Prompts(size);
  const double cpu0 = ProcessCpuSeconds();
  double t0 = NowSeconds();
  std::vector<std::thread> ts;
  for (int p = 0; p < producers; ++p) {
    ts.emplace_back([&, p] {
      lats[p].reserve(per);
      for (size_t i = 0; i < per; ++i) {
        NewJob j;
        j.prompt = PromptFor(pool, seq++);
        EnqueueResult r;
        double a = NowSeconds();
        Status st = store->Enqueue(j, &r);
        lats[p].push_back((NowSeconds() - a) * 1e6);
        if (!st.ok()) Die(st, "enqueue");
      }
    });
  }
  for (auto& t : ts) t.join();
  double elapsed = NowSeconds() - t0;
  if (cpu) {
    const double used = ProcessCpuSeconds() - cpu0;
    cpu->us_per_job = used / static_cast<double>(producers * per) * 1e6;
    cpu->cores = used / elapsed;
  }
  store->Close().IgnoreError();
  if (lat_us) {
    for (auto& l : lats) lat_us->insert(lat_us->end(), l.begin(), l.end());
  }
  return static_cast<double>(producers * per) / elapsed;
}

double SqliteEnqueue(const std::string& dir, int producers, size_t per, size_t size) {
  const std::string path = dir + "/jobs.sqlite";
  {
    sqlite3* db;
    sqlite3_open(path.c_str(), &db);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL;", nullptr, nullptr, nullptr);
    sqlite3_exec(db,
                 "CREATE TABLE jobs(id INTEGER PRIMARY KEY AUTOINCREMENT, prompt_id TEXT UNIQUE, prompt TEXT NOT NULL,"
                 " priority INTEGER NOT NULL, state INTEGER NOT NULL, created_ms INTEGER NOT NULL);",
                 nullptr, nullptr, nullptr);
    sqlite3_close(db);
  }
  std::atomic<uint64_t> seq{0};
  const auto& pool = Prompts(size);
  double t0 = NowSeconds();
  std::vector<std::thread> ts;
  for (int p = 0; p < producers; ++p) {
    ts.emplace_back([&] {
      sqlite3* db;
      sqlite3_open(path.c_str(), &db);
      sqlite3_busy_timeout(db, 60000);
      sqlite3_exec(db, "PRAGMA synchronous=FULL;", nullptr, nullptr, nullptr);
      sqlite3_stmt* st;
      sqlite3_prepare_v2(db, "INSERT INTO jobs(prompt_id, prompt, priority, state, created_ms) VALUES(?,?,1,0,?)", -1,
                         &st, nullptr);
      for (size_t i = 0; i < per; ++i) {
        uint64_t n = seq++;
        std::string pid = "p" + std::to_string(n);
        const std::string& prompt = PromptFor(pool, n);
        sqlite3_bind_text(st, 1, pid.c_str(), -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, prompt.c_str(), static_cast<int>(prompt.size()), SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, static_cast<sqlite3_int64>(NowSeconds() * 1000));
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_BUSY) sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
          std::cerr << "sqlite insert: " << sqlite3_errmsg(db) << std::endl;
          std::exit(1);
        }
        sqlite3_reset(st);
      }
      sqlite3_finalize(st);
      sqlite3_close(db);
    });
  }
  for (auto& t : ts) t.join();
  return static_cast<double>(producers * per) / (NowSeconds() - t0);
}

// Appends `size`-byte records with one fdatasync each: the floor for one durable write at a time.
double RawAppendFsync(const std::string& dir, size_t n, size_t size, std::vector<double>* lat_us) {
  const std::string path = dir + "/raw.log";
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
  const std::string& rec = Prompts(size)[0];
  double t0 = NowSeconds();
  for (size_t i = 0; i < n; ++i) {
    double a = NowSeconds();
    if (write(fd, rec.data(), rec.size()) != static_cast<ssize_t>(rec.size()) || fdatasync(fd) != 0) {
      std::perror("raw append");
      std::exit(1);
    }
    lat_us->push_back((NowSeconds() - a) * 1e6);
  }
  double rate = static_cast<double>(n) / (NowSeconds() - t0);
  close(fd);
  unlink(path.c_str());
  return rate;
}

// The disk's ceiling for synced writes: 1 MiB appends with one fdatasync each (about what a full commit group
// writes), in MB/s. Many producers of large prompts are bound by this, not by the store.
double DiskSyncedMBps(const std::string& dir, size_t mib) {
  const std::string path = dir + "/ceiling.log";
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
  std::string chunk;
  for (const auto& p : Prompts(30 * 1024)) chunk += p;
  chunk.resize(1 << 20, ' ');
  double t0 = NowSeconds();
  for (size_t i = 0; i < mib; ++i) {
    if (write(fd, chunk.data(), chunk.size()) != static_cast<ssize_t>(chunk.size()) || fdatasync(fd) != 0) {
      std::perror("disk ceiling");
      std::exit(1);
    }
  }
  double rate = static_cast<double>(mib) * chunk.size() / 1e6 / (NowSeconds() - t0);
  close(fd);
  unlink(path.c_str());
  return rate;
}

// many_only: just the 64-producer runs (with their SQLite baselines), for profiling the group commit.
void BenchEnqueue(bool many_only) {
  double disk_mbps;
  {
    ScratchDir d(g_dir, "ceiling");
    disk_mbps = DiskSyncedMBps(d.path(), Scaled(256));
  }
  Emit("enqueue", "disk_synced_write_mb_per_s", disk_mbps, "MB/s", "", 0, "{\"chunk\": \"1MiB\"}");
  for (size_t size : {size_t(1024), size_t(30 * 1024)}) {
    const std::string sz = size == 1024 ? "1KB" : "30KB";
    std::vector<double> raw_lat;
    double raw_rate = 0;
    if (!many_only) {
      {
        ScratchDir d(g_dir, "raw");
        raw_rate = RawAppendFsync(d.path(), Scaled(2000), size, &raw_lat);
      }
      Emit("enqueue", "raw_append_fdatasync_per_s", raw_rate, "ops/s", "", 0,
           "{\"size\": \"" + sz + "\", \"producers\": 1}");
    }
    for (int producers : {1, 8, 64}) {
      if (many_only && producers != 64) continue;
      size_t per = producers == 1 ? Scaled(2000) : producers == 8 ? Scaled(500) : Scaled(200);
      // 64 producers: three rounds, each SQLite then ours (then ours with the writer at normal priority, where
      // it could be raised), and the median of each: the machine's speed drifts between runs seconds apart.
      const int rounds = producers == 64 ? 3 : 1;
      std::vector<double> sqlite_rates, our_rates, normal_rates, cpu_us, cores;
      std::vector<double> lat;
      for (int r = 0; r < rounds; ++r) {
        {
          ScratchDir d(g_dir, "sqlite");
          sqlite_rates.push_back(SqliteEnqueue(d.path(), producers, per, size));
        }
        {
          ScratchDir d(g_dir, "ours");
          RunCpu cpu;
          our_rates.push_back(OursEnqueue(d.path(), producers, per, size, producers == 1 ? &lat : nullptr, true, &cpu));
          cpu_us.push_back(cpu.us_per_job);
          cores.push_back(cpu.cores);
        }
        if (producers == 64 && ScopedPriorityBoost::Permitted()) {
          // The same run with the writer at the callers' priority: what a process that may not raise it gets.
          ScratchDir d(g_dir, "ours");
          normal_rates.push_back(OursEnqueue(d.path(), producers, per, size, nullptr, /*raise_priority=*/false));
        }
      }
      const double sqlite_rate = Percentile(sqlite_rates, 50), ours = Percentile(our_rates, 50);
      // Whether the log writer's priority could be raised here (StoreOptions::raise_log_writer_priority).
      const std::string priority = ScopedPriorityBoost::Permitted() ? "raised" : "normal (not permitted)";
      std::string runs = ", \"jobs\": " + std::to_string(producers * per);
      if (rounds > 1) runs += ", \"rounds\": " + std::to_string(rounds) + ", \"statistic\": \"median\"";
      const std::string extra = "{\"size\": \"" + sz + "\", \"producers\": " + std::to_string(producers) + runs +
                                ", \"log_writer_priority\": \"" + priority + "\"}";
      Emit("enqueue", "durable_jobs_per_s", ours, "jobs/s", "sqlite_wal_synchronous_full", sqlite_rate, extra);
      if (!normal_rates.empty()) {
        Emit("enqueue", "durable_jobs_per_s_writer_at_normal_priority", Percentile(normal_rates, 50), "jobs/s",
             "sqlite_wal_synchronous_full", sqlite_rate, "{\"size\": \"" + sz + "\", \"producers\": 64" + runs + "}");
      }
      if (producers == 64) {
        // What bounds it when the disk syncs fast: the CPU each job costs (the prompt check, LZ4, the commit,
        // the kernel's share; the bench's own prompt copy too) and how much of the machine that kept busy.
        Emit("enqueue", "process_cpu_us_per_job", Percentile(cpu_us, 50), "us", "", 0, extra);
        Emit("enqueue", "process_cores_busy", Percentile(cores, 50), "cores", "cores_online",
             static_cast<double>(std::thread::hardware_concurrency()), extra);
        // how close to the disk's synced-write ceiling this rate is (prompt bytes only, records add a little)
        Emit("enqueue", "prompt_mb_per_s", ours * static_cast<double>(size) / 1e6, "MB/s", "disk_synced_write_mb_per_s",
             disk_mbps,
             extra.substr(0, extra.size() - 1) + ", \"sqlite_x10_needs_mb_per_s\": " +
                 std::to_string(10 * sqlite_rate * static_cast<double>(size) / 1e6) + "}");
      }
      if (producers == 1) {
        Emit("enqueue_latency", "p50_us", Percentile(lat, 50), "us", "raw_append_fdatasync_p50_us",
             Percentile(raw_lat, 50), extra);
        Emit("enqueue_latency", "p99_us", Percentile(lat, 99), "us", "raw_append_fdatasync_p99_us",
             Percentile(raw_lat, 99), extra);
      }
    }
  }
}

// ---- open time and memory -----------------------------------------------------------------------------

// Fills a store with n pending jobs of `size`-byte prompts, in batches (one sync each).
void Fill(Store* store, size_t n, size_t size, uint64_t seq0 = 0) {
  const size_t batch = size > 4096 ? 200 : 2000;
  for (size_t i = 0; i < n; i += batch) {
    std::vector<NewJob> jobs(std::min(batch, n - i));
    for (size_t k = 0; k < jobs.size(); ++k) jobs[k].prompt = PromptFor(Prompts(size), seq0 + i + k);
    std::vector<EnqueueResult> rs;
    Status s = store->EnqueueMany(jobs, &rs);
    if (!s.ok()) Die(s, "fill");
  }
}

// Opens the store in a fresh process and returns its figures (open seconds, RSS after open, peak RSS).
nlohmann::json OpenInChild(const std::string& dir) {
  std::string cmd = "/proc/" + std::to_string(getpid()) + "/exe rss-open '" + dir + "'";
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  std::string out;
  while (fgets(buf, sizeof(buf), p)) out += buf;
  pclose(p);
  return nlohmann::json::parse(out);
}

int RssOpenMain(const std::string& dir) {
  double before = RssMiB();
  double t0 = NowSeconds();
  std::unique_ptr<Store> store;
  RecoveryReport rep;
  StoreOptions o = BenchOptions();
  o.background_thread = false;
  Status s = Store::Open(o, dir, &store, &rep);
  if (!s.ok()) Die(s, "open");
  double open_s = NowSeconds() - t0;
  StoreStats st;
  store->Stats(&st).IgnoreError();
  nlohmann::json j = {{"open_s", open_s},
                      {"rss_mib", RssMiB()},
                      {"peak_rss_mib", PeakRssMiB()},
                      {"base_rss_mib", before},
                      {"jobs", st.total},
                      {"records_replayed", rep.records_replayed},
                      {"checkpoint", rep.checkpoint_segment}};
  std::cout << j.dump() << std::endl;
  std::exit(0);  // no close: do not write a checkpoint the next measurement would benefit from
}

void BenchOpenAndMemory() {
  for (size_t n : {Scaled(100000), Scaled(1000000)}) {
    ScratchDir d(g_dir, "open");
    const std::string dir = d.path() + "/store";
    double build_rss;
    {
      std::unique_ptr<Store> store;
      Status s = Store::Open(BenchOptions(), dir, &store);
      if (!s.ok()) Die(s, "open");
      Fill(store.get(), n, 1024);
      build_rss = RssMiB();
      store->Close().IgnoreError();
    }
    const std::string extra = "{\"jobs\": " + std::to_string(n) + ", \"prompt\": \"1KB\", \"state\": \"pending\"}";
    auto warm = OpenInChild(dir);
    Emit("open", "open_after_clean_close_s", warm["open_s"].get<double>(), "s", "", 0, extra);
    Emit("memory", "rss_after_open_mib", warm["rss_mib"].get<double>(), "MiB", "", 0, extra);
    Emit("memory", "peak_rss_during_open_mib", warm["peak_rss_mib"].get<double>(), "MiB", "", 0, extra);
    Emit("memory", "rss_of_the_process_that_enqueued_mib", build_rss, "MiB", "", 0, extra);
    // A crash: the child builds more on top and dies without closing; open replays the log since the last
    // periodic checkpoint.
    pid_t pid = fork();
    if (pid == 0) {
      std::unique_ptr<Store> store;
      if (!Store::Open(BenchOptions(), dir, &store).ok()) _exit(1);
      Fill(store.get(), std::max<size_t>(1, n / 10), 1024, n);
      _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    auto crashed = OpenInChild(dir);
    Emit("open", "open_after_crash_s", crashed["open_s"].get<double>(), "s", "", 0,
         "{\"jobs\": " + std::to_string(crashed["jobs"].get<uint64_t>()) +
             ", \"records_replayed\": " + std::to_string(crashed["records_replayed"].get<uint64_t>()) + "}");
  }
  // 100k pending jobs with 30 KB prompts: prompts stay on disk.
  {
    ScratchDir d(g_dir, "open30k");
    const std::string dir = d.path() + "/store";
    const size_t n = Scaled(100000);
    {
      std::unique_ptr<Store> store;
      if (!Store::Open(BenchOptions(), dir, &store).ok()) std::exit(1);
      Fill(store.get(), n, 30 * 1024);
      store->Close().IgnoreError();
    }
    auto r = OpenInChild(dir);
    const std::string extra = "{\"jobs\": " + std::to_string(n) + ", \"prompt\": \"30KB\", \"state\": \"pending\"}";
    Emit("memory", "rss_after_open_mib", r["rss_mib"].get<double>(), "MiB", "", 0, extra);
    Emit("open", "open_after_clean_close_s", r["open_s"].get<double>(), "s", "", 0, extra);
  }
}

// Open time must not grow with history: a store that finished, purged and compacted 1M jobs and holds 100k
// live ones, against a store that only ever held the 100k.
void BenchHistory() {
  const size_t live = Scaled(100000), history = Scaled(1000000);
  double plain_open, history_open;
  uint64_t plain_bytes = 0, history_bytes = 0;
  {
    ScratchDir d(g_dir, "plain");
    std::unique_ptr<Store> store;
    Must(Store::Open(BenchOptions(), d.path() + "/store", &store), "open the store");
    Fill(store.get(), live, 1024);
    StoreStats st;
    store->Stats(&st).IgnoreError();
    plain_bytes = st.log_bytes;
    store->Close().IgnoreError();
    plain_open = OpenInChild(d.path() + "/store")["open_s"].get<double>();
  }
  {
    ScratchDir d(g_dir, "history");
    std::unique_ptr<Store> store;
    Must(Store::Open(BenchOptions(), d.path() + "/store", &store), "open the store");
    Fill(store.get(), history, 256);
    std::vector<std::thread> ts;
    std::atomic<size_t> done{0};
    double t0 = NowSeconds();
    for (int t = 0; t < 64; ++t) {
      ts.emplace_back([&, t] {
        TakeOptions o;
        o.worker_id = "w" + std::to_string(t);
        for (;;) {
          std::unique_ptr<Lease> l;
          if (!store->Take(o, &l).ok() || !l) return;
          if (!store->Complete(l->job_id, l->token, "{}", {}).ok()) return;
          done++;
        }
      });
    }
    for (auto& t : ts) t.join();
    Emit("lifecycle", "take_complete_pairs_per_s", static_cast<double>(done) / (NowSeconds() - t0), "jobs/s", "", 0,
         "{\"workers\": 64, \"jobs\": " + std::to_string(done.load()) + "}");
    uint64_t removed = 0;
    store->Purge(INT64_MAX, &removed).IgnoreError();
    Status s = store->Compact();
    if (!s.ok()) Die(s, "compact");
    Fill(store.get(), live, 1024, history);
    StoreStats st;
    store->Stats(&st).IgnoreError();
    history_bytes = st.log_bytes;
    store->Close().IgnoreError();
    history_open = OpenInChild(d.path() + "/store")["open_s"].get<double>();
  }
  const std::string extra =
      "{\"live_jobs\": " + std::to_string(live) + ", \"finished_and_compacted\": " + std::to_string(history) + "}";
  Emit("open", "open_with_history_s", history_open, "s", "open_without_history_s", plain_open, extra);
  Emit("disk", "log_bytes_with_history", static_cast<double>(history_bytes), "bytes", "log_bytes_without_history",
       static_cast<double>(plain_bytes), extra);
}

// ---- artifact writer ----------------------------------------------------------------------------------

double PlainWrite(const std::string& dir, uint64_t size, const std::string& chunk) {
  const std::string tmp = dir + "/plain.tmp", dst = dir + "/plain.bin";
  double t0 = NowSeconds();
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  for (uint64_t off = 0; off < size; off += chunk.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), size - off));
    if (write(fd, chunk.data(), n) != static_cast<ssize_t>(n)) std::exit(1);
  }
  fsync(fd);
  close(fd);
  rename(tmp.c_str(), dst.c_str());
  double secs = NowSeconds() - t0;
  unlink(dst.c_str());
  return static_cast<double>(size) / (1 << 20) / secs;
}

double OursWrite(const std::string& dir, uint64_t size, const std::string& chunk) {
  std::unique_ptr<ArtifactWriter> w;
  if (!ArtifactWriter::Open(Env::Default(), dir + "/art", &w).ok()) std::exit(1);
  double t0 = NowSeconds();
  std::unique_ptr<ArtifactStream> s;
  if (!w->Begin("job/out.bin", &s).ok()) std::exit(1);
  for (uint64_t off = 0; off < size; off += chunk.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), size - off));
    if (!s->Append(std::string_view(chunk).substr(0, n)).ok()) std::exit(1);
  }
  ArtifactInfo info;
  if (!s->Commit(&info).ok()) std::exit(1);
  double secs = NowSeconds() - t0;
  RemoveTree(dir + "/art");
  return static_cast<double>(size) / (1 << 20) / secs;
}

void BenchArtifacts() {
  std::string chunk(1 << 20, '\0');
  for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>((i * 131) ^ (i >> 9));
  for (uint64_t size : {uint64_t(10) << 20, uint64_t(1) << 30}) {
    ScratchDir d(g_dir, "artifacts");
    int reps = size < (100u << 20) ? 5 : 1;
    std::vector<double> ours, plain;
    for (int r = 0; r < reps; ++r) {
      plain.push_back(PlainWrite(d.path(), size, chunk));
      ours.push_back(OursWrite(d.path(), size, chunk));
    }
    Emit("artifacts", "write_MiB_per_s", Percentile(ours, 50), "MiB/s", "plain_write_fsync_rename_MiB_per_s",
         Percentile(plain, 50),
         "{\"size_MiB\": " + std::to_string(size >> 20) + ", \"runs\": " + std::to_string(reps) + "}");
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string only;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "rss-open" && i + 1 < argc) return RssOpenMain(argv[i + 1]);
    if (a == "scale-farm") return ScaleFarmMain();
    if (a == "--dir" && i + 1 < argc)
      g_dir = argv[++i];
    else if (a == "--only" && i + 1 < argc)
      only = argv[++i];
    else if (a == "--scale" && i + 1 < argc)
      g_scale = std::stod(argv[++i]);
    else {
      std::cerr
          << "usage: comfymq_bench [--dir DIR] [--only "
             "enqueue|enqueue-many|open|history|artifacts|cluster|cluster-latency|cluster-throughput|scale|unrunnable] "
             "[--scale F]\n";
      return 2;
    }
  }
  auto want = [&](const char* name) { return only.empty() || only == name; };
  if (want("enqueue") || only == "enqueue-many") BenchEnqueue(only == "enqueue-many");
  if (want("open")) BenchOpenAndMemory();
  if (want("history")) BenchHistory();
  if (want("artifacts")) BenchArtifacts();
  if (want("cluster") || only == "cluster-latency") BenchClusterLatency(g_dir, g_scale);
  if (want("cluster") || only == "cluster-throughput") BenchClusterThroughput(g_dir, g_scale);
  if (want("cluster") || only == "cluster-inputs") BenchInputTransfer(g_dir, g_scale);
  if (want("scale")) BenchScale(g_dir, g_scale);
  if (want("unrunnable")) BenchUnrunnable(g_dir, g_scale);
  RemoveTree(g_dir);
  return 0;
}
