#include "workers/scoreboard.hpp"

#include <fmt/format.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace workers {

Scoreboard Scoreboard::create(int processes, std::size_t slots, std::size_t caches) {
  const std::size_t ids = static_cast<std::size_t>(processes) + 1;
  const std::size_t bytes = sizeof(ScoreboardHeader) + ids * sizeof(WorkerTotals) +
                            slots * sizeof(WorkerSlot) + caches * sizeof(StoreSyncRecord);
  void* area = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (area == MAP_FAILED)
    throw std::runtime_error(fmt::format("cannot map the worker scoreboard: {}", std::strerror(errno)));
  Scoreboard board;
  board.base_ = static_cast<char*>(area);  // zero-filled by mmap: every atomic starts at 0
  board.bytes_ = bytes;
  ScoreboardHeader& h = board.header();
  h.magic = kScoreboardMagic;
  h.version = kScoreboardVersion;
  h.header_size = sizeof(ScoreboardHeader);
  h.totals_size = sizeof(WorkerTotals);
  h.slot_size = sizeof(WorkerSlot);
  h.id_count = static_cast<std::uint32_t>(ids);
  h.slot_count = static_cast<std::uint32_t>(slots);
  h.cache_count = static_cast<std::uint32_t>(caches);
  for (std::size_t id = 0; id < ids; ++id) board.totals(static_cast<int>(id)).active_slot.store(-1);
  return board;
}

Scoreboard& Scoreboard::operator=(Scoreboard&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) munmap(base_, bytes_);
    base_ = other.base_;
    bytes_ = other.bytes_;
    other.base_ = nullptr;
  }
  return *this;
}

Scoreboard::~Scoreboard() {
  if (base_ != nullptr) munmap(base_, bytes_);
}

}  // namespace workers
