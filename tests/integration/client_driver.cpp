// The driver of test_client.py's persistent-mode tests: several calls with one server::CacheClient
// (built with the project, so the sanitizer builds test it with their runtime).
#include <chrono>
#include <iostream>
#include <string>
#include <thread>

#include "server/client.hpp"
// argv: address persistent|oneshot. stdin: one call a line ("get K", "set K V", "update K V",
// "del K", "exists K", "clear", "sleep MS"). stdout: "ok [value]", "miss" or "error <last_error>".
int main(int argc, char** argv) {
  if (argc != 3) return 2;
  server::ClientOptions options;
  options.persistent = std::string(argv[2]) == "persistent";
  options.timeout_ms = 3000;
  server::CacheClient client(argv[1], options);
  std::string line;
  while (std::getline(std::cin, line)) {
    const auto sp1 = line.find(' ');
    const std::string cmd = line.substr(0, sp1);
    std::string key, value;
    if (sp1 != std::string::npos) {
      const auto sp2 = line.find(' ', sp1 + 1);
      key = line.substr(sp1 + 1, sp2 == std::string::npos ? std::string::npos : sp2 - sp1 - 1);
      if (sp2 != std::string::npos) value = line.substr(sp2 + 1);
    }
    server::ClientStatus status = server::ClientStatus::error;
    std::string got;
    if (cmd == "sleep") {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::stoi(key)));
      continue;
    }
    if (cmd == "get")
      status = client.get(key, got);
    else if (cmd == "set")
      status = client.set(key, value);
    else if (cmd == "update")
      status = client.update(key, value);
    else if (cmd == "del")
      status = client.del(key);
    else if (cmd == "exists")
      status = client.exists(key);
    else if (cmd == "clear")
      status = client.clear();
    if (status == server::ClientStatus::ok)
      std::cout << "ok" << (got.empty() ? "" : " " + got) << "\n";
    else if (status == server::ClientStatus::miss)
      std::cout << "miss\n";
    else
      std::cout << "error " << client.last_error() << "\n";
    std::cout.flush();
  }
  return 0;
}
