// Scale benchmark (part of comfymq_bench, `--only scale`): one host, the durable store and the broker in this
// process, with 100, 300 and 1,000 simulated workers connected over loopback tcp.
//
// The workers are light: one DEALER each, speaking CMQP/1 (net/protocol.h) as a real worker does: HELLO with a
// ComfyUI's worth of capabilities and host facts, READY, a HEARTBEAT when it sent nothing for a second, and a
// RESULT at once for every JOB, then READY again. A farm process (this program run as `comfymq_bench scale-farm`,
// its commands on a socket pair) serves its workers from one thread. One farm holds 100 workers (all of them at
// 100) and is SIGKILLed last; three others share the rest. Per size it prints:
//   - idle_cpu_pct_of_core: the host process's CPU over 10 s of heartbeats with no job (target < 10% of a core),
//     with the broker thread's and ZeroMQ's I/O thread's shares and the broker thread's CPU per message;
//   - dispatch_p99_us: Store::Enqueue called (its fdatasync included) -> the JOB read in the farm (target 5 ms);
//   - noop_jobs_per_s: jobs queued while the queue is paused, then run with every worker busy;
//   - rss_per_worker_kib: the host's RSS growth over the workers' joining and 10 s of idle, per worker;
//   - dead_workers_noticed_ms: SIGKILL of the farm holding 100 -> the broker's 100th "left" (target 3 heartbeats).
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
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

namespace comfymq::bench {
namespace {

using json = nlohmann::json;

constexpr int kHeartbeatMs = 1000;
constexpr int kLiveness = 3;
constexpr int kKilled = 100;      // workers in the farm that is SIGKILLed
constexpr int kOtherFarms = 3;    // farms that hold the rest
constexpr int kCapsVariants = 4;  // distinct capability texts in the farm
constexpr int kFarmFd = 100;      // the farm's end of its socket pair, in the farm process
constexpr double kIdleSeconds = 10;

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
int64_t SteadyMs() { return SteadyNs() / 1000000; }

// --- what a worker says -------------------------------------------------------------------------------------

// What a ComfyUI with a few custom node packs reports (comfy_nodes/worker/capabilities.py): ~650 node classes and
// ~220 COMBO inputs, its model files among them; ~40 KB of text. `variant` changes its LoRAs and a few
// checkpoints: a farm's machines mostly share nodes and models, and the broker keeps one parsed copy per text.
std::string MakeCapabilities(int variant) {
  auto words = [](const char* text) {
    json v = json::array();
    std::istringstream in(text);
    for (std::string w; in >> w;) v.push_back(w);
    return v;
  };
  json classes = words(
      "CheckpointLoaderSimple CLIPTextEncode EmptyLatentImage KSampler KSamplerAdvanced VAEDecode VAEEncode SaveImage "
      "PreviewImage LoadImage LoraLoader VAELoader ControlNetLoader ControlNetApplyAdvanced UpscaleModelLoader "
      "ImageUpscaleWithModel ImageScale ImageInvert EmptyImage CLIPLoader UNETLoader DualCLIPLoader CLIPSetLastLayer "
      "ConditioningCombine LatentUpscale");
  const json samplers = words(
      "euler euler_cfg_pp euler_ancestral euler_ancestral_cfg_pp heun heunpp2 dpm_2 dpm_2_ancestral lms dpm_fast "
      "dpm_adaptive dpmpp_2s_ancestral dpmpp_sde dpmpp_sde_gpu dpmpp_2m dpmpp_2m_sde dpmpp_2m_sde_gpu dpmpp_3m_sde "
      "dpmpp_3m_sde_gpu ddpm lcm ipndm ipndm_v deis res_multistep gradient_estimation er_sde seeds_2 seeds_3 ddim "
      "uni_pc uni_pc_bh2");
  const json schedulers =
      words("simple sgm_uniform karras exponential ddim_uniform beta normal linear_quadratic kl_optimal");
  json combos = json::object();
  auto names = [](const std::string& stem, int n, const char* ext) {
    json v = json::array();
    for (int i = 0; i < n; ++i) v.push_back(stem + "_" + std::to_string(i) + ext);
    return v;
  };
  for (const char* k : {"KSampler", "KSamplerAdvanced"}) {
    combos[std::string(k) + ".sampler_name"] = samplers;
    combos[std::string(k) + ".scheduler"] = schedulers;
  }
  json ckpts = names("checkpoints/sdxl/community_finetune", 24, ".safetensors");
  ckpts.push_back("sd_xl_base_1.0.safetensors");
  for (auto& c : names("checkpoints/machine_" + std::to_string(variant), 4, ".safetensors")) ckpts.push_back(c);
  combos["CheckpointLoaderSimple.ckpt_name"] = ckpts;
  json loras = names("loras/shared/style_lora", 60, ".safetensors");
  for (auto& l : names("loras/machine_" + std::to_string(variant) + "/character", 40, ".safetensors"))
    loras.push_back(l);
  combos["LoraLoader.lora_name"] = loras;
  combos["VAELoader.vae_name"] = names("vae/sdxl_vae", 6, ".safetensors");
  combos["ControlNetLoader.control_net_name"] = names("controlnet/control_sdxl", 20, ".safetensors");
  combos["UpscaleModelLoader.model_name"] = names("upscale_models/RealESRGAN_x4plus", 10, ".pth");
  combos["CLIPLoader.clip_name"] = names("text_encoders/clip_l", 12, ".safetensors");
  combos["DualCLIPLoader.clip_name1"] = combos["CLIPLoader.clip_name"];
  combos["UNETLoader.unet_name"] = names("diffusion_models/flux1-dev", 15, ".safetensors");
  combos["ImageScale.upscale_method"] = json{"nearest-exact", "bilinear", "area", "bicubic", "lanczos"};
  combos["LatentUpscale.upscale_method"] = combos["ImageScale.upscale_method"];
  for (int pack = 0; pack < 25; ++pack) {
    for (int node = 0; node < 25; ++node) {
      const std::string cls = "CustomPack" + std::to_string(pack) + "_Node" + std::to_string(node);
      classes.push_back(cls);
      if (node % 3 == 0) combos[cls + ".mode"] = names("mode", 2 + (pack + node) % 7, "");
    }
  }
  return json{{"node_classes", classes}, {"combos", combos}}.dump();
}

// The host facts a worker's bridge sends (comfy_nodes/worker/bridge.py, _host_facts).
std::string MakeInfo(int index) {
  json device = {{"name", "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync"},
                 {"type", "cuda"},
                 {"index", 0},
                 {"vram_total", 25393692672},
                 {"vram_free", 24001396736},
                 {"torch_vram_total", 0},
                 {"torch_vram_free", 0}};
  return json{{"hostname", "gpu-box-" + std::to_string(index)},
              {"os", "posix"},
              {"python", "3.11.9 (main, Apr 19 2024, 16:48:06) [GCC 11.2.0]"},
              {"pytorch", "2.5.1+cu124"},
              {"ram_total", 68719476736},
              {"devices", json::array({device})},
              {"comfy_url", "http://127.0.0.1:8188"},
              {"comfyui_api", {{"jobs", true}, {"jobs_cancel", true}, {"features", {"supports_preview_metadata"}}}}}
      .dump();
}

// A text-to-image graph in API form: every class and COMBO value in it is among every variant's capabilities.
std::string MakePrompt(uint64_t seed) {
  json p = {
      {"4", {{"class_type", "CheckpointLoaderSimple"}, {"inputs", {{"ckpt_name", "sd_xl_base_1.0.safetensors"}}}}},
      {"5", {{"class_type", "EmptyLatentImage"}, {"inputs", {{"width", 1024}, {"height", 1024}, {"batch_size", 1}}}}},
      {"6",
       {{"class_type", "CLIPTextEncode"},
        {"inputs", {{"text", "a lighthouse on a cliff at dusk, volumetric light"}, {"clip", {"4", 1}}}}}},
      {"7", {{"class_type", "CLIPTextEncode"}, {"inputs", {{"text", "blurry, watermark"}, {"clip", {"4", 1}}}}}},
      {"3",
       {{"class_type", "KSampler"},
        {"inputs",
         {{"seed", seed},
          {"steps", 20},
          {"cfg", 7.0},
          {"sampler_name", "euler"},
          {"scheduler", "normal"},
          {"denoise", 1.0},
          {"model", {"4", 0}},
          {"positive", {"6", 0}},
          {"negative", {"7", 0}},
          {"latent_image", {"5", 0}}}}}},
      {"8", {{"class_type", "VAEDecode"}, {"inputs", {{"samples", {"3", 0}}, {"vae", {"4", 2}}}}}},
      {"9", {{"class_type", "SaveImage"}, {"inputs", {{"filename_prefix", "ComfyUI"}, {"images", {"8", 0}}}}}}};
  return p.dump();
}

std::string RandomHex16(std::mt19937_64& rng) {
  char s[17];
  std::snprintf(s, sizeof(s), "%016llx", static_cast<unsigned long long>(rng()));
  return s;
}

// --- the farm process ---------------------------------------------------------------------------------------

// False when the other end is gone.
bool WriteAll(int fd, const std::string& text) {
  for (size_t at = 0; at < text.size();) {
    ssize_t n = write(fd, text.data() + at, text.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    at += static_cast<size_t>(n);
  }
  return true;
}

// Simulated workers served by one thread. Commands (one line each) on the control socket:
//   join ENDPOINT FIRST COUNT [raw]  connect workers FIRST..FIRST+COUNT-1, say HELLO; answers "joined" once every
//                              one is welcomed, or "refused REASON" (raw: to a raw ROUTER, answered by anything)
//   dump                       answers "jobs N", then N lines "JOB_ID NS": the JOBs read since the last dump and
//                              when (steady clock in ns, which every process on the machine shares)
//   leave                      closes every worker's socket; answers "left"
// It exits when the control socket closes.
class Farm {
 public:
  explicit Farm(int ctl) : ctl_(ctl), epoll_(epoll_create1(0)) { ctx_.set(zmq::ctxopt::max_sockets, 4096); }

  // One epoll over the control socket and every worker's ZMQ_FD (which signals that the socket's state may have
  // changed: each wake-up is drained until recv finds nothing), so a turn costs the sockets that have news, not
  // all of them. Heartbeats are looked at every 20 ms.
  void Run() {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kCtlKey;
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, ctl_, &ev) != 0) _exit(4);
    epoll_event ready[256];
    int64_t beats_ms = 0;
    for (;;) {
      const int n = epoll_wait(epoll_, ready, 256, 20);
      for (int i = 0; i < n; ++i) {
        if (ready[i].data.u64 == kCtlKey) {
          if (!ReadCommands()) return;
        } else if (ready[i].data.u64 < workers_.size()) {
          Drain(workers_[ready[i].data.u64]);
        }
      }
      const int64_t now = SteadyMs();
      if (now - beats_ms < 20) continue;
      beats_ms = now;
      for (auto& w : workers_) {
        if (!w.welcomed || now - w.last_sent_ms < kHeartbeatMs) continue;
        proto::Message hb;
        hb.cmd = proto::Cmd::kHeartbeat;
        Send(w, hb);
        Drain(w);  // a send may take in the signal of a message waiting: read it now
      }
    }
  }

 private:
  struct Worker {
    zmq::socket_t socket;
    bool raw = false;  // to a raw ROUTER: says HELLO's bytes, counts any answer, sends nothing more
    bool welcomed = false;
    int64_t last_sent_ms = 0;
  };

  bool ReadCommands() {
    char buf[4096];
    ssize_t n = read(ctl_, buf, sizeof(buf));
    if (n <= 0) return false;
    inbox_.append(buf, static_cast<size_t>(n));
    for (size_t nl; (nl = inbox_.find('\n')) != std::string::npos;) {
      std::istringstream line(inbox_.substr(0, nl));
      inbox_.erase(0, nl + 1);
      std::string cmd;
      line >> cmd;
      if (cmd == "join") {
        std::string endpoint, raw;
        int first = 0, count = 0;
        line >> endpoint >> first >> count >> raw;
        Join(endpoint, first, count, raw == "raw");
      } else if (cmd == "dump") {
        std::string out = "jobs " + std::to_string(received_.size()) + "\n";
        for (const auto& [job, ns] : received_) out += std::to_string(job) + " " + std::to_string(ns) + "\n";
        received_.clear();
        Say(out);
      } else if (cmd == "leave") {
        for (auto& w : workers_) epoll_ctl(epoll_, EPOLL_CTL_DEL, w.socket.get(zmq::sockopt::fd), nullptr);
        workers_.clear();
        Say("left\n");
      }
    }
    return true;
  }

  void Join(const std::string& endpoint, int first, int count, bool raw) {
    std::vector<std::string> caps;
    for (int v = 0; v < kCapsVariants; ++v) caps.push_back(MakeCapabilities(v));
    waiting_ = count;
    for (int i = first; i < first + count; ++i) {
      Worker w{zmq::socket_t(ctx_, zmq::socket_type::dealer)};
      w.socket.set(zmq::sockopt::linger, 0);
      w.socket.set(zmq::sockopt::sndhwm, 1000);
      w.socket.set(zmq::sockopt::rcvhwm, 1000);
      w.socket.connect(endpoint);
      proto::Message hello;
      hello.cmd = proto::Cmd::kHello;
      hello.worker_id = "scale-worker-" + std::to_string(i);
      hello.name = "gpu-box-" + std::to_string(i);
      hello.plugin_version = "0.9.0";
      hello.comfyui_version = "0.8.0";
      hello.capacity = 1;
      hello.info_json = MakeInfo(i);
      hello.caps_json = caps[i % kCapsVariants];
      hello.instance = RandomHex16(rng_);
      hello.install = RandomHex16(rng_);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = workers_.size();
      if (epoll_ctl(epoll_, EPOLL_CTL_ADD, w.socket.get(zmq::sockopt::fd), &ev) != 0) _exit(4);
      w.raw = raw;
      workers_.push_back(std::move(w));
      Send(workers_.back(), hello);
    }
    if (count == 0) Say("joined\n");
  }

  void Say(const std::string& text) {
    if (!WriteAll(ctl_, text)) _exit(3);  // the host is gone
  }

  void Drain(Worker& w) {
    while (net::RecvFrames(w.socket, &frames_)) Handle(w, frames_);
  }

  void Handle(Worker& w, const std::vector<std::string>& frames) {
    if (w.raw) {
      if (--waiting_ == 0) Say("joined\n");
      return;
    }
    proto::Message m;
    if (!proto::Decode(net::Views(frames, 0), &m).ok()) return;
    proto::Message out;
    switch (m.cmd) {
      case proto::Cmd::kWelcome:
        w.welcomed = true;
        out.cmd = proto::Cmd::kReady;
        out.credit = 1;
        Send(w, out);
        // Heartbeats at random phases, as a farm's machines started at different times would send them.
        w.last_sent_ms -= std::uniform_int_distribution<int64_t>(0, kHeartbeatMs - 1)(rng_);
        if (--waiting_ == 0) Say("joined\n");
        break;
      case proto::Cmd::kRefuse: Say("refused " + m.reason + "\n"); break;
      case proto::Cmd::kJob:
        received_.emplace_back(m.job_id, SteadyNs());
        out.cmd = proto::Cmd::kResult;
        out.job_id = m.job_id;
        out.token = m.token;
        out.json = "{}";
        Send(w, out);
        out = proto::Message();
        out.cmd = proto::Cmd::kReady;
        out.credit = 1;
        Send(w, out);
        break;
      default: break;  // PING, ACK: heard
    }
  }

  void Send(Worker& w, const proto::Message& m) {
    w.last_sent_ms = SteadyMs();
    net::SendFrames(w.socket, nullptr, proto::Encode(m));
  }

  static constexpr uint64_t kCtlKey = ~0ull;
  const int ctl_, epoll_;
  zmq::context_t ctx_;
  std::vector<std::string> frames_;
  std::mt19937_64 rng_{std::random_device{}()};
  std::vector<Worker> workers_;
  std::vector<std::pair<uint64_t, int64_t>> received_;
  std::string inbox_;
  int waiting_ = 0;
};

// --- the host's side ----------------------------------------------------------------------------------------

// A farm process and its control socket.
class FarmProcess {
 public:
  FarmProcess() {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    pid_ = fork();
    if (pid_ == 0) {  // async-signal-safe calls only until exec: this process may have threads
      if (sv[1] == kFarmFd) {
        fcntl(kFarmFd, F_SETFD, 0);
      } else {
        dup2(sv[1], kFarmFd);
      }
      execl("/proc/self/exe", "comfymq_bench", "scale-farm", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(sv[1]);
    fd_ = sv[0];
  }
  ~FarmProcess() {
    close(fd_);
    Kill();
  }
  FarmProcess(const FarmProcess&) = delete;
  FarmProcess& operator=(const FarmProcess&) = delete;

  void Tell(const std::string& line) {
    if (!WriteAll(fd_, line + "\n")) Fail("a worker farm is gone");
  }
  // The next line the farm says; exits the benchmark when it says nothing for `timeout_ms`.
  std::string Line(int timeout_ms = 60000) {
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      pollfd p{fd_, POLLIN, 0};
      char chunk[65536];
      ssize_t n = poll(&p, 1, timeout_ms) == 1 ? read(fd_, chunk, sizeof(chunk)) : 0;
      if (n <= 0) Fail("a worker farm stopped answering");
      buf_.append(chunk, static_cast<size_t>(n));
    }
  }
  // The JOBs the farm read since the last call: job id -> steady ns.
  void Received(std::map<uint64_t, int64_t>* out) {
    Tell("dump");
    std::istringstream head(Line());
    std::string word;
    size_t n = 0;
    head >> word >> n;
    for (size_t i = 0; i < n; ++i) {
      std::istringstream line(Line());
      uint64_t job = 0;
      int64_t ns = 0;
      line >> job >> ns;
      (*out)[job] = ns;
    }
  }
  pid_t pid() const { return pid_; }
  [[noreturn]] static void Fail(const char* what) {
    std::fprintf(stderr, "comfymq_bench: %s\n", what);
    std::exit(1);
  }
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }

 private:
  pid_t pid_ = 0;
  int fd_ = -1;
  std::string buf_;
};

// CPU seconds used by the threads of process `pid` ("self": this one) whose name starts with `prefix`, summed
// over /proc/PID/task/*/schedstat (ns on a CPU).
double TasksCpuSeconds(const std::string& pid, const std::string& prefix = "") {
  double total = 0;
  const std::string tasks = "/proc/" + pid + "/task";
  DIR* dir = opendir(tasks.c_str());
  if (dir == nullptr) return 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const std::string task = tasks + "/" + e->d_name;
    std::string comm;
    std::getline(std::ifstream(task + "/comm"), comm);
    if (comm.compare(0, prefix.size(), prefix) != 0) continue;
    uint64_t ns = 0;
    std::ifstream(task + "/schedstat") >> ns;
    total += static_cast<double>(ns) / 1e9;
  }
  closedir(dir);
  return total;
}

// CPU readings at one moment: the host process, its broker thread, its ZeroMQ I/O thread, and the farms.
struct CpuMark {
  explicit CpuMark(const std::vector<pid_t>& farms) {
    for (pid_t p : farms) this->farms += TasksCpuSeconds(std::to_string(p));
  }
  double t = NowSeconds(), process = ProcessCpuSeconds(), broker = TasksCpuSeconds("self", "cmq-broker"),
         zmq = TasksCpuSeconds("self", "ZMQbg"), farms = 0;
};

void DrainEvents(Broker* broker) {
  std::string e;
  while (broker->NextEvent(0, &e)) {}
}

uint64_t Succeeded(Store* store) {
  StoreStats st;
  Must(store->Stats(&st), "read the store's counts");
  return st.counts[static_cast<int>(JobState::kSucceeded)];
}

void WaitSucceeded(Store* store, uint64_t n, const char* what) {
  const double deadline = NowSeconds() + 120;
  while (Succeeded(store) < n) {
    if (NowSeconds() > deadline) {
      std::fprintf(stderr, "comfymq_bench: %s did not finish in 120 s\n", what);
      std::exit(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

std::vector<double> RawFdatasyncUs(const std::string& dir, int n) {
  const std::string path = dir + "/raw.log";
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
  std::string rec(2048, 'r');
  std::vector<double> lat;
  for (int i = 0; i < n && fd >= 0; ++i) {
    const double a = NowSeconds();
    if (write(fd, rec.data(), rec.size()) < 0 || fdatasync(fd) != 0) break;
    lat.push_back((NowSeconds() - a) * 1e6);
  }
  if (fd >= 0) close(fd);
  unlink(path.c_str());
  return lat;
}

// Connects `workers` workers to `endpoint`: the first min(100, workers) from farms[0] (the one killed last), the rest
// shared by the others; returns once every one is answered (welcomed, or for `raw`, answered at all).
void JoinFarms(const std::vector<FarmProcess*>& farms, const std::string& endpoint, int workers, bool raw) {
  const int first = std::min(kKilled, workers), rest = workers - first, shares = static_cast<int>(farms.size()) - 1;
  const std::string mode = raw ? " raw" : "";
  farms[0]->Tell("join " + endpoint + " 0 " + std::to_string(first) + mode);
  for (int f = 0, next = first; f < shares; ++f) {
    const int n = rest / shares + (f < rest % shares);
    farms[f + 1]->Tell("join " + endpoint + " " + std::to_string(next) + " " + std::to_string(n) + mode);
    next += n;
  }
  for (FarmProcess* f : farms) {
    const std::string said = f->Line();
    if (said != "joined") FarmProcess::Fail(("a simulated worker was not let in: " + said).c_str());
  }
}

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

int ScaleFarmMain() {
  signal(SIGPIPE, SIG_IGN);
  Farm(kFarmFd).Run();
  return 0;
}

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
