// The dump image (reply to modifier1 111 modifier2 6). uWSGI sends a copy of its raw item+data memory;
// ours is a self-describing list of the live items, so that it survives changes of our layout and can be
// loaded into a cache of any geometry that fits the items (see docs/protocol.md).
//
// Reply: header [111, L, 7] + vars block of L bytes:
//   items      capacity of the cache (as uWSGI: the geometry's item count)
//   blocksize  largest value size
//   keysize    largest key size
//   format     kDumpFormat
//   count      number of records in the image
//   bytes      length of the image that follows the vars
// then the image: kDumpMagic (8 bytes), then `count` records:
//   u16 LE key length | u32 LE value length | u64 LE expires (absolute unix seconds, 0 = never) | key | value
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace server {

inline constexpr std::string_view kDumpFormat = "ucached-items-1";
inline constexpr std::string_view kDumpMagic{"UCDUMP1\n", 8};
inline constexpr std::size_t kDumpRecordHeader = 2 + 4 + 8;

// Appends the magic to an empty image.
void begin_dump_image(std::string& image);
// Appends one record. Throws std::length_error if the key exceeds 65535 bytes or the value 4 GiB.
void append_dump_record(std::string& image, std::string_view key, std::string_view value,
                        std::uint64_t expires);

// Reads an image, calling visit for each record. Returns false with a reason (offset included) on a
// wrong magic or a record running past the end; records before the error have been visited.
bool parse_dump_image(
    std::string_view image,
    const std::function<void(std::string_view key, std::string_view value, std::uint64_t expires)>& visit,
    std::string* error = nullptr);

// uWSGI 2.0's dump image (its item table, then its data blocks; spec §4.1): `items` slots of
// kUwsgiItemHeader + keysize bytes (u64 LE flags, key length, hash, value length, first block, expires,
// then links we ignore, then the key), then `items` blocks of `blocksize` bytes. keysize is not in the
// reply: it is what the image's size leaves. Slot 0 is never used. Bitmap-mode caches (a value spanning
// blocks, or more blocks than items) are not readable: their image does not split this way and is
// refused with a reason. Every length and index is checked against the image before use.
inline constexpr std::uint64_t kUwsgiItemHeader = 88;
bool parse_uwsgi_dump_image(
    std::string_view image, std::uint64_t items, std::uint64_t blocksize,
    const std::function<void(std::string_view key, std::string_view value, std::uint64_t expires)>& visit,
    std::string* error = nullptr);

}  // namespace server
