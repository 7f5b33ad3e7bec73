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

// Whether this process may set a thread's nice value to -20 (root with CAP_SYS_NICE, or RLIMIT_NICE 40):
// probed in a child, so nothing here changes.
bool MayRaise() {
  return InChild([] { return setpriority(PRIO_PROCESS, static_cast<id_t>(Tid()), -20) == 0 ? 0 : 1; }) == 0;
}

TEST(ThreadPriorityTest, RaisesOnlyThisThreadAndGivesBackItsOwnNiceValue) {
  if (!MayRaise()) GTEST_SKIP() << "this process may not raise a thread's priority (no CAP_SYS_NICE, RLIMIT_NICE low)";
  EXPECT_EQ(InChild([] {
              // The boost runs on a thread other than the main one (tid != pid), and the main one must keep
              // its nice value meanwhile.
              const int main_before = NiceOf(Tid());
              int bad = 0, main_during = main_before;
              std::mutex mu;
              std::condition_variable cv;
              bool boosted = false, checked = false;
              std::thread booster([&] {
                if (setpriority(PRIO_PROCESS, static_cast<id_t>(Tid()), 3) != 0) {
                  bad += 100;
                  return;
                }
                {
                  ScopedPriorityBoost boost(true);
                  bad += !boost.raised();
                  bad += NiceOf(Tid()) != 3 - ScopedPriorityBoost::kSteps;
                  std::unique_lock<std::mutex> l(mu);
                  boosted = true;
                  cv.notify_all();
                  cv.wait(l, [&] { return checked; });  // held while the main thread looks at itself
                  l.unlock();
                  boost.End();
                  bad += NiceOf(Tid()) != 3;
                  boost.End();  // idempotent
                  bad += NiceOf(Tid()) != 3;
                }
                bad += NiceOf(Tid()) != 3;
                // Near the top it stops at -20; the destructor ends it too.
                if (setpriority(PRIO_PROCESS, static_cast<id_t>(Tid()), -15) != 0) {
                  bad += 100;
                  return;
                }
                {
                  ScopedPriorityBoost boost(true);
                  bad += NiceOf(Tid()) != -20;
                }
                bad += NiceOf(Tid()) != -15;
              });
              {
                std::unique_lock<std::mutex> l(mu);
                cv.wait(l, [&] { return boosted; });
                main_during = NiceOf(Tid());
                checked = true;
                cv.notify_all();
              }
              booster.join();
              bad += main_during != main_before;  // a thread's boost is its own
              bad += NiceOf(Tid()) != main_before;
              bad += !ScopedPriorityBoost::Permitted();
              return bad > 99 ? 99 : bad;
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

TEST(ThreadPriorityTest, WithOnlyAnRlimitNiceItRaisesAsFarAsThatAllows) {
  const int rc = InChild([] {
    // Setting up an unprivileged user with a chosen limit needs root with CAP_SYS_RESOURCE.
    struct rlimit three = {23, 23};  // nice values down to 20 - 23 = -3
    if (geteuid() != 0 || setrlimit(RLIMIT_NICE, &three) != 0) return 77;
    if (setuid(65534) != 0) return 100 + errno;
    int bad = 0;
    const int before = NiceOf(Tid());  // 0 in a default test run; the boost needs before > -3
    if (before <= -3) return 78;
    {
      ScopedPriorityBoost boost(true);
      bad += !boost.raised();
      bad += NiceOf(Tid()) != -3;
    }
    bad += NiceOf(Tid()) != before;
    bad += !ScopedPriorityBoost::Permitted();
    return bad;
  });
  if (rc == 77 || rc == 78) GTEST_SKIP() << "needs root with CAP_SYS_RESOURCE to set up (and a nice value above -3)";
  EXPECT_EQ(rc, 0);
}

}  // namespace
}  // namespace comfymq
