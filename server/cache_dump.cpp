#include "server/cache_dump.hpp"

#include <fmt/format.h>

#include <stdexcept>

#include "server/protocol.hpp"

namespace server {

namespace {

void append_le(std::string& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

std::uint64_t load_le(const char* data, int bytes) {
  std::uint64_t value = 0;
  for (int i = 0; i < bytes; ++i)
    value |= static_cast<std::uint64_t>(static_cast<unsigned char>(data[i])) << (8 * i);
  return value;
}

}  // namespace

void begin_dump_image(std::string& image) { image.append(kDumpMagic); }

void append_dump_record(std::string& image, std::string_view key, std::string_view value,
                        std::uint64_t expires) {
  if (key.size() > 0xffff || value.size() > 0xffffffffull) {
    throw std::length_error(
        fmt::format("dump record: key of {} bytes or value of {} bytes too long", key.size(), value.size()));
  }
  append_le(image, key.size(), 2);
  append_le(image, value.size(), 4);
  append_le(image, expires, 8);
  image.append(key);
  image.append(value);
}

bool parse_dump_image(
    std::string_view image,
    const std::function<void(std::string_view key, std::string_view value, std::uint64_t expires)>& visit,
    std::string* error) {
  if (image.size() < kDumpMagic.size() || image.substr(0, kDumpMagic.size()) != kDumpMagic) {
    if (error) {
      *error = fmt::format("dump image: missing magic {} (starts with {})", printable(kDumpMagic),
                           printable(image.substr(0, kDumpMagic.size())));
    }
    return false;
  }
  std::size_t offset = kDumpMagic.size();
  while (offset < image.size()) {
    const std::size_t left = image.size() - offset;
    if (left < kDumpRecordHeader) {
      if (error)
        *error =
            fmt::format("dump image: record header at offset {} cut short ({} bytes left)", offset, left);
      return false;
    }
    const std::uint64_t key_length = load_le(image.data() + offset, 2);
    const std::uint64_t value_length = load_le(image.data() + offset + 2, 4);
    const std::uint64_t expires = load_le(image.data() + offset + 6, 8);
    if (left - kDumpRecordHeader < key_length + value_length) {
      if (error) {
        *error = fmt::format("dump image: record at offset {} (key {} + value {} bytes) runs past the end",
                             offset, key_length, value_length);
      }
      return false;
    }
    const std::size_t key_start = offset + kDumpRecordHeader;
    visit(image.substr(key_start, key_length), image.substr(key_start + key_length, value_length), expires);
    offset = key_start + key_length + value_length;
  }
  return true;
}

bool parse_uwsgi_dump_image(
    std::string_view image, std::uint64_t items, std::uint64_t blocksize,
    const std::function<void(std::string_view key, std::string_view value, std::uint64_t expires)>& visit,
    std::string* error) {
  const auto fail = [&](std::string why) {
    if (error) *error = "uWSGI dump image: " + std::move(why);
    return false;
  };
  if (items == 0 || blocksize == 0 || items > image.size() || blocksize > image.size() / items)
    return fail(
        fmt::format("{} bytes cannot hold {} items of {}-byte blocks", image.size(), items, blocksize));
  // keysize is not sent: the item table takes what the data blocks leave.
  const std::uint64_t table = image.size() - items * blocksize;
  if (table % items != 0 || table / items <= kUwsgiItemHeader)
    return fail(fmt::format("{} bytes do not split into {} items of {}-byte blocks and an item table",
                            image.size(), items, blocksize));
  const std::uint64_t stride = table / items;
  const std::uint64_t keysize = stride - kUwsgiItemHeader;
  for (std::uint64_t slot = 1; slot < items; ++slot) {  // slot 0 is uWSGI's null item, never used
    const char* item = image.data() + slot * stride;
    const std::uint64_t key_length = load_le(item + 8, 8);
    const std::uint64_t value_length = load_le(item + 24, 8);
    const std::uint64_t first_block = load_le(item + 32, 8);
    const std::uint64_t expires = load_le(item + 40, 8);
    if (key_length == 0) continue;  // a free slot
    if (key_length > keysize || value_length > blocksize || first_block >= items)
      return fail(
          fmt::format("item {}: key {} bytes (keysize {}), value {} bytes (blocksize {}), block {} of {}",
                      slot, key_length, keysize, value_length, blocksize, first_block, items));
    const std::uint64_t value_start = table + first_block * blocksize;
    visit(image.substr(slot * stride + kUwsgiItemHeader, key_length), image.substr(value_start, value_length),
          expires);
  }
  return true;
}

}  // namespace server
