// The simulated worker farm the scale benchmarks share (`--only scale`, `--only unrunnable`): what a worker says
// (capabilities, host facts, prompts), the farm processes that serve the workers, and CPU readings by thread.
//
// The workers are light: one DEALER each, speaking CMQP/1 (net/protocol.h) as a real worker does: HELLO with a
// ComfyUI's worth of capabilities and host facts, READY, a HEARTBEAT when it sent nothing for a second, and a
// RESULT at once for every JOB, then READY again. A farm process (this program run as `comfymq_bench scale-farm`,
// its commands on a socket pair) serves its workers from one thread. One farm holds 100 workers (all of them at
// 100) and is SIGKILLed last; three others share the rest. Per size it prints:
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bench_util.h"
#include "comfymq/broker.h"
#include "comfymq/store.h"

namespace comfymq::bench {

constexpr int kHeartbeatMs = 1000;
constexpr int kLiveness = 3;
constexpr int kKilled = 100;      // workers in the farm that is SIGKILLed (JoinFarms: farms[0] holds them)
constexpr int kCapsVariants = 4;  // distinct capability texts in the farm
constexpr int kFarmFd = 100;      // the farm's end of its socket pair, in the farm process

int64_t SteadyNs();
inline int64_t SteadyMs() { return SteadyNs() / 1000000; }

// What a ComfyUI with a few custom node packs reports: ~650 node classes and ~220 COMBO inputs; `variant` changes
// its LoRAs and a few checkpoints.
std::string MakeCapabilities(int variant);
// The host facts a worker's bridge sends.
std::string MakeInfo(int index);
// A text-to-image graph in API form that every variant can run (its seed makes it unique).
std::string MakePrompt(uint64_t seed);

// False when the other end is gone.
bool WriteAll(int fd, const std::string& text);

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
double TasksCpuSeconds(const std::string& pid, const std::string& prefix = "");

// CPU readings at one moment: the host process, its broker thread, its commit threads (the broker's passes), its
// ZeroMQ I/O thread, and the farms.
struct CpuMark {
  explicit CpuMark(const std::vector<pid_t>& farms) {
    for (pid_t p : farms) this->farms += TasksCpuSeconds(std::to_string(p));
  }
  double t = NowSeconds(), process = ProcessCpuSeconds(), broker = TasksCpuSeconds("self", "cmq-broker"),
         commit = TasksCpuSeconds("self", "cmq-commit"), zmq = TasksCpuSeconds("self", "ZMQbg"), farms = 0;
};

void DrainEvents(Broker* broker);
uint64_t Succeeded(Store* store);
// Waits until `n` jobs have succeeded; exits the benchmark after 120 s.
void WaitSucceeded(Store* store, uint64_t n, const char* what);
// `n` raw write + fdatasync of 2 KiB in `dir`, in us each: the disk's own figure.
std::vector<double> RawFdatasyncUs(const std::string& dir, int n);
// Connects `workers` workers to `endpoint`: the first min(100, workers) from farms[0] (the one killed last), the rest
// shared by the others; returns once every one is answered (welcomed, or for `raw`, answered at all).
void JoinFarms(const std::vector<FarmProcess*>& farms, const std::string& endpoint, int workers, bool raw);

// The farm process's main (`comfymq_bench scale-farm`).
int ScaleFarmMain();

}  // namespace comfymq::bench
