// FlatMultiMap64: an open-addressing multimap from 64-bit hashes to non-zero 64-bit values, 16 bytes a slot
// (linear probing, backward-shift deletion). Used for the prompt_id index, where a node-based map would cost
// several times the memory per job. Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace comfymq {

class FlatMultiMap64 {
 public:
  FlatMultiMap64() { slots_.resize(kMinCapacity); }

  void Insert(uint64_t key, uint64_t value) {
    if ((size_ + 1) * 10 > slots_.size() * 7) Rehash(slots_.size() * 2);
    InsertNoGrow(key, value);
    size_++;
  }

  // Removes one (key, value) pair; returns false when absent.
  bool Erase(uint64_t key, uint64_t value) {
    size_t mask = slots_.size() - 1;
    for (size_t i = Home(key);; i = (i + 1) & mask) {
      Slot& s = slots_[i];
      if (s.value == 0) return false;
      if (s.key == key && s.value == value) {
        RemoveAt(i);
        size_--;
        return true;
      }
    }
  }

  // Calls fn(value) for every value stored under key.
  template <typename Fn>
  void ForEach(uint64_t key, Fn&& fn) const {
    size_t mask = slots_.size() - 1;
    for (size_t i = Home(key);; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.value == 0) return;
      if (s.key == key) fn(s.value);
    }
  }

  size_t size() const { return size_; }
  void Clear() {
    slots_.assign(kMinCapacity, Slot());
    size_ = 0;
  }
  void Reserve(size_t n) {
    size_t cap = slots_.size();
    while (n * 10 > cap * 7) cap *= 2;
    if (cap != slots_.size()) Rehash(cap);
  }

 private:
  struct Slot {
    uint64_t key = 0;
    uint64_t value = 0;  // 0 = empty
  };
  static constexpr size_t kMinCapacity = 16;

  size_t Home(uint64_t key) const {
    // Keys are already hashes; mix anyway so sequential keys spread.
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return static_cast<size_t>(h >> 20) & (slots_.size() - 1);
  }

  void InsertNoGrow(uint64_t key, uint64_t value) {
    size_t mask = slots_.size() - 1;
    size_t i = Home(key);
    while (slots_[i].value != 0) i = (i + 1) & mask;
    slots_[i] = Slot{key, value};
  }

  void RemoveAt(size_t hole) {
    size_t mask = slots_.size() - 1;
    size_t i = hole;
    for (;;) {
      i = (i + 1) & mask;
      if (slots_[i].value == 0) break;
      size_t home = Home(slots_[i].key);
      // Move slot i into the hole if its home is not in (hole, i] (cyclically).
      bool in_range = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
      if (!in_range) {
        slots_[hole] = slots_[i];
        hole = i;
      }
    }
    slots_[hole] = Slot();
  }

  void Rehash(size_t capacity) {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(capacity, Slot());
    for (const Slot& s : old) {
      if (s.value != 0) InsertNoGrow(s.key, s.value);
    }
  }

  std::vector<Slot> slots_;
  size_t size_ = 0;
};

}  // namespace comfymq
