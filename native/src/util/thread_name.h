// Names the calling thread (Linux: at most 15 characters), so `top -H`, gdb and perf show which of ComfyMQ's
// threads is which.
#pragma once

#include <pthread.h>

namespace comfymq {

inline void NameThisThread(const char* name) { pthread_setname_np(pthread_self(), name); }

}  // namespace comfymq
