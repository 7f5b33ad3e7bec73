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

ScopedPriorityBoost::ScopedPriorityBoost(bool wanted) {
  if (!wanted || g_refused.load(std::memory_order_relaxed)) return;
  const id_t tid = static_cast<id_t>(syscall(SYS_gettid));
  errno = 0;
  const int now = getpriority(PRIO_PROCESS, tid);  // -1 is a valid nice value: errno tells
  if (now == -1 && errno != 0) return;
  const int target = now - kSteps < -20 ? -20 : now - kSteps;
  if (target >= now) return;
  if (setpriority(PRIO_PROCESS, tid, target) != 0) {
    if (errno == EPERM || errno == EACCES) g_refused.store(true, std::memory_order_relaxed);
    return;
  }
  raised_ = true;
  before_ = now;
}

void ScopedPriorityBoost::End() {
  if (!raised_) return;
  raised_ = false;
  // Lowering a thread's own priority is always allowed.
  setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), before_);
}

#else

ScopedPriorityBoost::ScopedPriorityBoost(bool) {}
void ScopedPriorityBoost::End() {}

#endif

}  // namespace comfymq
