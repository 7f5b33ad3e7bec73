// Facts about this process and machine that the core records (who holds a store's lock, whose temp file this is)
// or checks (whether a temp file's writer still runs). One implementation per platform: process_posix.cc.
#pragma once

#include <cstdint>
#include <string>

namespace comfymq {

// This process's id.
int64_t ProcessId();
// This machine's host name ("" when it cannot be read).
std::string HostName();
// True only when `pid` surely names no process on this machine (a crashed writer's temp file may go).
bool ProcessGone(int64_t pid);
// Names the calling thread (Linux: at most 15 characters), so `top -H`, gdb and perf show which of ComfyMQ's
// threads is which. Best effort.
void NameThisThread(const char* name);

}  // namespace comfymq
