// ScopedPriorityBoost (util/thread_priority.h): raises only the calling thread's priority, by kSteps and at
// most to -20, gives back exactly the nice value it had, and where the process may not raise it, changes
// nothing and stops trying. Each case runs in a child process: the refusal flag is process-wide.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "util/thread_priority.h"

namespace comfymq {
namespace {

int NiceOf(pid_t tid) { return getpriority(PRIO_PROCESS, static_cast<id_t>(tid)); }
pid_t Tid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

// Runs `body` in a child; its exit code is the number of failed checks (or 100 + errno if setup failed).
int InChild(const std::function<int()>& body) {
  fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) _exit(body());
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200;
}

bool MayRaise() {
  struct rlimit rl;
  return geteuid() == 0 || (getrlimit(RLIMIT_NICE, &rl) == 0 && rl.rlim_cur >= 20 + ScopedPriorityBoost::kSteps);
}

TEST(ThreadPriorityTest, RaisesOnlyThisThreadAndGivesBackItsOwnNiceValue) {
  if (!MayRaise()) GTEST_SKIP() << "this process may not raise a thread's priority (not root, RLIMIT_NICE low)";
  EXPECT_EQ(InChild([] {
              int bad = 0;
              if (setpriority(PRIO_PROCESS, static_cast<id_t>(Tid()), 3) != 0) return 100 + errno;
              int other_before = 0, other_during = 0;
              bool boosted = false, ended = false;
              std::mutex mu;
              std::condition_variable cv;
              std::thread other([&] {
                std::unique_lock<std::mutex> l(mu);
                other_before = NiceOf(Tid());
                cv.wait(l, [&] { return boosted; });
                other_during = NiceOf(Tid());
                cv.wait(l, [&] { return ended; });
              });
              {
                ScopedPriorityBoost boost(true);
                bad += !boost.raised();
                bad += NiceOf(Tid()) != 3 - ScopedPriorityBoost::kSteps;
                {
                  std::lock_guard<std::mutex> l(mu);
                  boosted = true;
                }
                cv.notify_all();
                boost.End();
                bad += NiceOf(Tid()) != 3;
                boost.End();  // idempotent
                bad += NiceOf(Tid()) != 3;
              }
              bad += NiceOf(Tid()) != 3;
              {
                std::lock_guard<std::mutex> l(mu);
                ended = true;
              }
              cv.notify_all();
              other.join();
              bad += other_during != other_before;  // a thread's boost is its own
              // Near the top it stops at -20; a destructor ends it too.
              if (setpriority(PRIO_PROCESS, static_cast<id_t>(Tid()), -15) != 0) return 100 + errno;
              {
                ScopedPriorityBoost boost(true);
                bad += NiceOf(Tid()) != -20;
              }
              bad += NiceOf(Tid()) != -15;
              bad += !ScopedPriorityBoost::Permitted();
              return bad;
            }),
            0);
}

TEST(ThreadPriorityTest, NotWantedDoesNothing) {
  EXPECT_EQ(InChild([] {
              const int before = NiceOf(Tid());
              ScopedPriorityBoost boost(false);
              return (boost.raised() ? 1 : 0) + (NiceOf(Tid()) != before ? 1 : 0);
            }),
            0);
}

TEST(ThreadPriorityTest, WhereNotPermittedItChangesNothingAndStopsTrying) {
  EXPECT_EQ(InChild([] {
              // Take away the right: an unprivileged user, no RLIMIT_NICE headroom.
              struct rlimit none = {0, 0};
              if (setrlimit(RLIMIT_NICE, &none) != 0) return 100 + errno;
              if (geteuid() == 0 && setuid(65534) != 0) return 100 + errno;
              int bad = 0;
              const int before = NiceOf(Tid());
              bad += !ScopedPriorityBoost::Permitted();  // nothing tried yet
              {
                ScopedPriorityBoost boost(true);
                bad += boost.raised();
                bad += NiceOf(Tid()) != before;
              }
              bad += ScopedPriorityBoost::Permitted();  // refused once: off for the process
              ScopedPriorityBoost again(true);
              bad += again.raised();
              bad += NiceOf(Tid()) != before;
              return bad;
            }),
            0);
}

}  // namespace
}  // namespace comfymq
