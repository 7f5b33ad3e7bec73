// ScopedPriorityBoost: while it lives, the calling thread runs at a higher scheduling priority (a nice value
// kSteps lower than its own, at most -20), then gets back exactly the nice value it had. For a thread that
// holds everyone else up for a moment, such as the store's log writer between its turn and its sync: on a
// busy machine it otherwise waits behind the callers' own CPU work at each wake-up inside the sync.
//
// Only where the process may raise a thread's priority: CAP_SYS_NICE (e.g. root outside a container), or
// RLIMIT_NICE (`ulimit -e`, limits.conf's `nice`), which may allow less than kSteps: then as far as it does.
// Where neither allows any raise, the first refusal turns it off for the process: a failed system call or
// two, then nothing. Must be ended on the thread that made it (the destructor does). Linux only (nice values
// are per thread there); a no-op elsewhere.
#pragma once

namespace comfymq {

class ScopedPriorityBoost {
 public:
  static constexpr int kSteps = 10;

  explicit ScopedPriorityBoost(bool wanted);
  ~ScopedPriorityBoost() { End(); }
  ScopedPriorityBoost(const ScopedPriorityBoost&) = delete;
  ScopedPriorityBoost& operator=(const ScopedPriorityBoost&) = delete;

  // Back to the thread's own priority now (idempotent).
  void End();
  bool raised() const { return raised_; }

  // False once a boost was refused in this process (true before any attempt).
  static bool Permitted();

 private:
  bool raised_ = false;
  int before_ = 0;  // the thread's nice value before the boost
};

}  // namespace comfymq
