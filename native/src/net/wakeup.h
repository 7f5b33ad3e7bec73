// Wakeup: lets other threads interrupt a zmq_poll loop (the read end of a pipe is one more poll item).
#pragma once

#include <fcntl.h>
#include <unistd.h>

namespace comfymq::net {

class Wakeup {
 public:
  Wakeup() {
    if (::pipe2(fds_, O_NONBLOCK | O_CLOEXEC) != 0) fds_[0] = fds_[1] = -1;
  }
  ~Wakeup() {
    if (fds_[0] >= 0) ::close(fds_[0]);
    if (fds_[1] >= 0) ::close(fds_[1]);
  }
  Wakeup(const Wakeup&) = delete;
  Wakeup& operator=(const Wakeup&) = delete;

  bool ok() const { return fds_[0] >= 0; }
  int fd() const { return fds_[0]; }
  void Notify() {
    char c = 1;
    ssize_t n = ::write(fds_[1], &c, 1);  // a full pipe already means "wake up"
    (void)n;
  }
  void Drain() {
    char buf[256];
    while (::read(fds_[0], buf, sizeof(buf)) > 0) {
    }
  }

 private:
  int fds_[2] = {-1, -1};
};

}  // namespace comfymq::net
