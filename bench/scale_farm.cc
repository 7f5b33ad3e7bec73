#include "scale_farm.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "net/protocol.h"
#include "net/zmq_frames.h"

namespace comfymq::bench {

using json = nlohmann::json;

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

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

namespace {

std::string RandomHex16(std::mt19937_64& rng) {
  char s[17];
  std::snprintf(s, sizeof(s), "%016llx", static_cast<unsigned long long>(rng()));
  return s;
}

// --- the farm process --------------------------------------------------------------------------------------

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

}  // namespace

int ScaleFarmMain() {
  signal(SIGPIPE, SIG_IGN);
  Farm(kFarmFd).Run();
  return 0;
}

// --- the host's side ----------------------------------------------------------------------------------------

// CPU seconds used by the threads of process `pid` ("self": this one) whose name starts with `prefix`, summed
// over /proc/PID/task/*/schedstat (ns on a CPU).
double TasksCpuSeconds(const std::string& pid, const std::string& prefix) {
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

}  // namespace comfymq::bench
