// A private temporary directory for store-file tests, removed with everything in it.
#pragma once

#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

namespace cachetest {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/cache_test_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

}  // namespace cachetest
