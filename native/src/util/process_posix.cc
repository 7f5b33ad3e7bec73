// util/process.h on POSIX systems.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include "util/process.h"

namespace comfymq {

int64_t ProcessId() { return static_cast<int64_t>(::getpid()); }

std::string HostName() {
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0) return "";
  return host;
}

bool ProcessGone(int64_t pid) { return pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH; }

void NameThisThread(const char* name) {
#if defined(__linux__)
  pthread_setname_np(pthread_self(), name);
#elif defined(__APPLE__)
  pthread_setname_np(name);
#else
  (void)name;
#endif
}

}  // namespace comfymq
