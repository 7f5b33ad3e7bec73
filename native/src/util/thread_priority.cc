#include "util/thread_priority.h"

#include <atomic>
#include <cerrno>

#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace comfymq {
namespace {

std::atomic<bool> g_refused{false};

}  // namespace

bool ScopedPriorityBoost::Permitted() { return !g_refused.load(std::memory_order_relaxed); }

#ifdef __linux__

namespace {

id_t ThisThread() {
  static thread_local const id_t tid = static_cast<id_t>(syscall(SYS_gettid));
  return tid;
}

// The lowest nice value RLIMIT_NICE lets this process set without CAP_SYS_NICE (20 - the limit).
int RlimitFloor() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NICE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 40) return -20;
  return 20 - static_cast<int>(rl.rlim_cur);
}

}  // namespace

ScopedPriorityBoost::ScopedPriorityBoost(bool wanted) {
  if (!wanted || g_refused.load(std::memory_order_relaxed)) return;
  const id_t tid = ThisThread();
  errno = 0;
  const int now = getpriority(PRIO_PROCESS, tid);  // -1 is a valid nice value: errno tells
  if (now == -1 && errno != 0) return;
  int target = now - kSteps < -20 ? -20 : now - kSteps;
  if (target >= now) return;
  if (setpriority(PRIO_PROCESS, tid, target) != 0) {
    if (errno != EPERM && errno != EACCES) return;
    // No CAP_SYS_NICE: as far as RLIMIT_NICE allows, if that is a raise at all; else never again.
    target = RlimitFloor();
    if (target >= now || setpriority(PRIO_PROCESS, tid, target) != 0) {
      g_refused.store(true, std::memory_order_relaxed);
      return;
    }
  }
  raised_ = true;
  before_ = now;
}

void ScopedPriorityBoost::End() {
  if (!raised_) return;
  raised_ = false;
  // Lowering a thread's own priority is always allowed.
  setpriority(PRIO_PROCESS, ThisThread(), before_);
}

#else

ScopedPriorityBoost::ScopedPriorityBoost(bool) {}
void ScopedPriorityBoost::End() {}

#endif

}  // namespace comfymq
