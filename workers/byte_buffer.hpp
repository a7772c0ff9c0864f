// One connection's input buffer in a worker (pooled across connections).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

namespace workers {

// A growable byte buffer that does not zero what it is about to receive (std::string::resize would
// memset every read).
class ByteBuffer {
 public:
  // Pooled buffers above this are shrunk when a connection gives theirs back.
  static constexpr std::size_t kRetainedBuffer = std::size_t{128} * 1024;

  char* data() { return data_.get(); }
  std::size_t size() const { return size_; }
  std::size_t capacity() const { return capacity_; }
  std::string_view view() const { return {data_.get(), size_}; }
  void reserve(std::size_t wanted) {
    if (wanted <= capacity_) return;
    std::size_t grown = std::max(wanted, capacity_ * 2);
    auto bigger = std::make_unique_for_overwrite<char[]>(grown);
    if (size_ > 0) std::memcpy(bigger.get(), data_.get(), size_);
    data_ = std::move(bigger);
    capacity_ = grown;
  }
  char* spare() { return data_.get() + size_; }
  std::size_t spare_size() const { return capacity_ - size_; }
  void commit(std::size_t n) { size_ += n; }
  void consume(std::size_t n) {
    if (n >= size_) {
      size_ = 0;
      return;
    }
    std::memmove(data_.get(), data_.get() + n, size_ - n);
    size_ -= n;
  }
  // Drops n bytes at pos (clamped to what is there), moving what follows them down.
  void erase(std::size_t pos, std::size_t n) {
    if (pos >= size_) return;
    n = std::min(n, size_ - pos);
    std::memmove(data_.get() + pos, data_.get() + pos + n, size_ - pos - n);
    size_ -= n;
  }
  void reset_for_reuse() {
    size_ = 0;
    if (capacity_ > kRetainedBuffer) {
      data_.reset();
      capacity_ = 0;
    }
  }

 private:
  std::unique_ptr<char[]> data_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace workers
