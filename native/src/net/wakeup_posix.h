// Wakeup (POSIX: a pipe): lets other threads interrupt a zmq_poll loop (the read end of a pipe is one more poll
// item). Windows would need another (zmq_poll cannot wait on a pipe there; an inproc PAIR socket can).
// Notifies coalesce: while one is pending (not yet drained) others skip the write, so a burst of commands
// costs one syscall and one wakeup. Contract for the loop: Drain() first, then look at what was posted.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <atomic>

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
    if (pending_.exchange(true)) return;  // a byte is in the pipe (or about to be): the loop will look
    char c = 1;
    ssize_t n = ::write(fds_[1], &c, 1);  // a full pipe already means "wake up"
    (void)n;
  }
  // Empties the pipe, then re-arms Notify. A Notify racing with this either finds pending still set (and
  // its post is seen by the look that follows Drain) or writes a new byte (another wakeup).
  void Drain() {
    char buf[256];
    while (::read(fds_[0], buf, sizeof(buf)) > 0) {}
    pending_.store(false);
  }

 private:
  int fds_[2] = {-1, -1};
  std::atomic<bool> pending_{false};
};

}  // namespace comfymq::net
