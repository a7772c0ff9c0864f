// Helpers shared by the config/ unit tests: parse a command line, expect a ConfigError, a private
// directory for the files of one test.
#pragma once

#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace {

using config::ConfigError;
using config::ParseResult;

ParseResult parse(std::initializer_list<std::string> args) {
  std::vector<std::string> storage{"server"};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<const char*> argv;
  for (const auto& arg : storage) argv.push_back(arg.c_str());
  return config::parse_command_line(static_cast<int>(argv.size()), argv.data());
}

// The message of the ConfigError that parsing must throw ("" fails the test).
std::string error_of(std::initializer_list<std::string> args) {
  try {
    parse(args);
  } catch (const ConfigError& error) {
    return error.what();
  }
  FAIL("expected a ConfigError");
  return "";
}

// A private directory for the ini/toml files of one test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "config-test-XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // Writes name (which may include subdirectories) under the directory; returns its path.
  std::string write(const std::string& name, const std::string& content) const {
    const auto file = (path_ / name).string();
    std::filesystem::create_directories((path_ / name).parent_path());
    std::ofstream(file) << content;
    return file;
  }

 private:
  std::filesystem::path path_;
};

}  // namespace
