// A closed-loop load generator for the memcached text protocol (bench/memcached_vs.sh runs it against
// memcached and ours): C persistent connections on one epoll thread (--threads T: split over T, each
// with its own epoll), each with one request in flight; a mix of get and set (or multi-gets of M keys)
// over K keys with values of V bytes. Prints ops/s, the server's CPU per operation, read from /proc for
// the pids given (a server's processes), and its own CPU.
//
//   mc_load HOST:PORT --conns 16 --value 64 --keys 10000 --set-ratio 0.1 --multi 1 --seconds 5 --pids 123,456
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

struct Options {
  std::string host = "127.0.0.1";
  int port = 11211;
  int conns = 16;
  std::size_t value = 64;
  int keys = 10000;
  double set_ratio = 0.1;
  int multi = 1;
  double seconds = 5;
  bool fill = true;
  int threads = 1;
  std::vector<int> pids;
};

struct Counts {
  std::uint64_t ops = 0, gets = 0, sets = 0, errors = 0;
};

struct Conn {
  int fd = -1;
  std::string out;
  std::size_t sent = 0;
  std::string in;
  bool is_set = false;
  int hits_expected = 0;
};

// This load generator's own CPU seconds: on 2 cores its one thread can be the ceiling of the rate (a
// load_cpu_s near `seconds` says so).
double own_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

// CPU seconds (user + system) of a process and all its threads, from /proc/PID/stat.
double cpu_seconds(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(f, line);
  const auto close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double cpu_of(const std::vector<int>& pids) {
  double total = 0;
  for (int pid : pids) total += cpu_seconds(pid);
  return total;
}

// True when `in` holds one whole reply to the request in flight.
bool complete(const Conn& c) {
  if (c.is_set) return c.in.size() >= 2 && c.in.compare(c.in.size() - 2, 2, "\r\n") == 0;
  return c.in.size() >= 5 && c.in.compare(c.in.size() - 5, 5, "END\r\n") == 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: mc_load HOST:PORT [--conns N] [--value BYTES] [--keys N] [--set-ratio R] "
                 "[--multi M] [--seconds S] [--fill 0|1] [--threads T] [--pids P1,P2]\n");
    return 2;
  }
  const std::string target = argv[1];
  o.host = target.substr(0, target.rfind(':'));
  o.port = std::atoi(target.c_str() + target.rfind(':') + 1);
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string_view k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--conns")
      o.conns = std::atoi(v);
    else if (k == "--value")
      o.value = std::strtoull(v, nullptr, 10);
    else if (k == "--keys")
      o.keys = std::atoi(v);
    else if (k == "--set-ratio")
      o.set_ratio = std::atof(v);
    else if (k == "--multi")
      o.multi = std::atoi(v);
    else if (k == "--seconds")
      o.seconds = std::atof(v);
    else if (k == "--fill")
      o.fill = std::atoi(v) != 0;
    else if (k == "--threads")
      o.threads = std::atoi(v);
    else if (k == "--pids") {
      std::stringstream ss(v);
      std::string p;
      while (std::getline(ss, p, ',')) o.pids.push_back(std::atoi(p.c_str()));
    } else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (o.seconds <= 0 || o.seconds > 600 || o.conns < 1 || o.conns > 4096 || o.multi < 1 || o.keys < 1 ||
      o.threads < 1 || o.threads > o.conns) {
    std::fprintf(stderr, "mc_load: options out of range (seconds 0-600, conns 1-4096, threads 1-conns)\n");
    return 2;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(o.port));
  inet_pton(AF_INET, o.host.c_str(), &addr.sin_addr);
  const std::string value(o.value, 'x');
  const auto key = [](int i) { return "key:" + std::to_string(i); };

  // Fill every key once (one connection, pipelined in batches) so gets hit; `--fill 0` skips it (a
  // server that answers every get alike, whose counters should see only the measured requests).
  if (o.fill) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      std::perror("connect");
      return 1;
    }
    for (int start = 0; start < o.keys; start += 100) {
      std::string batch;
      int n = 0;
      for (int i = start; i < std::min(o.keys, start + 100); ++i, ++n)
        batch += "set " + key(i) + " 0 0 " + std::to_string(o.value) + "\r\n" + value + "\r\n";
      if (write(fd, batch.data(), batch.size()) != static_cast<ssize_t>(batch.size())) return 1;
      std::string got;
      char buf[65536];
      while (static_cast<int>(std::count(got.begin(), got.end(), '\n')) < n) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0) return 1;
        got.append(buf, static_cast<std::size_t>(r));
      }
    }
    close(fd);
  }

  // Each thread drives its share of the connections with its own epoll; on a 2-core machine one thread
  // can be the ceiling of the rate (load_cpu_s near `seconds`), two share the cores with the server.
  using clock = std::chrono::steady_clock;
  std::vector<Counts> counts(static_cast<std::size_t>(o.threads));
  std::vector<std::vector<Conn>> shares(static_cast<std::size_t>(o.threads));
  std::vector<int> epolls(static_cast<std::size_t>(o.threads));
  for (int i = 0; i < o.conns; ++i) shares[static_cast<std::size_t>(i % o.threads)].emplace_back();
  for (int t = 0; t < o.threads; ++t) {
    const int ep = epoll_create1(0);
    epolls[static_cast<std::size_t>(t)] = ep;
    std::vector<Conn>& conns = shares[static_cast<std::size_t>(t)];
    for (std::size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      c.fd = socket(AF_INET, SOCK_STREAM, 0);
      if (connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        std::perror("connect");
        return 1;
      }
      int one = 1;
      setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      fcntl(c.fd, F_SETFL, O_NONBLOCK);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = i;
      epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
    }
  }
  const double cpu0 = cpu_of(o.pids);
  const double self0 = own_cpu_seconds();
  const auto t0 = clock::now();
  const auto end = t0 + std::chrono::duration<double>(o.seconds);
  const auto drive = [&](int t) {
    std::vector<Conn>& conns = shares[static_cast<std::size_t>(t)];
    Counts& n = counts[static_cast<std::size_t>(t)];
    const int ep = epolls[static_cast<std::size_t>(t)];
    std::mt19937 rng(42 + static_cast<unsigned>(t));
    std::uniform_int_distribution<int> pick(0, o.keys - 1);
    std::uniform_real_distribution<double> coin(0, 1);
    const auto next_request = [&](Conn& c) {
      c.out.clear();
      c.sent = 0;
      c.in.clear();
      c.is_set = coin(rng) < o.set_ratio;
      if (c.is_set) {
        c.out = "set " + key(pick(rng)) + " 0 0 " + std::to_string(o.value) + "\r\n" + value + "\r\n";
      } else {
        c.out = "get";
        for (int m = 0; m < o.multi;
             ++m) {  // appended in two steps: GCC 12 -O3 warns (-Wrestrict) on " " + ...
          c.out += ' ';
          c.out += key(pick(rng));
        }
        c.out += "\r\n";
      }
    };
    for (Conn& c : conns) {
      next_request(c);
      if (write(c.fd, c.out.data(), c.out.size()) != static_cast<ssize_t>(c.out.size())) ++n.errors;
    }
    std::vector<epoll_event> events(conns.size());
    std::vector<char> buf(1 << 16);
    while (clock::now() < end) {
      const int ready = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 100);
      for (int e = 0; e < ready; ++e) {
        Conn& c = conns[events[e].data.u64];
        for (;;) {
          const ssize_t r = read(c.fd, buf.data(), buf.size());
          if (r <= 0) break;
          c.in.append(buf.data(), static_cast<std::size_t>(r));
        }
        if (!complete(c)) continue;
        if (c.is_set) {
          ++n.sets;
          if (c.in != "STORED\r\n") ++n.errors;
        } else {
          n.gets += static_cast<std::uint64_t>(o.multi);
        }
        ++n.ops;
        next_request(c);
        if (write(c.fd, c.out.data(), c.out.size()) != static_cast<ssize_t>(c.out.size())) ++n.errors;
      }
    }
  };
  std::vector<std::thread> others;
  for (int t = 1; t < o.threads; ++t) others.emplace_back(drive, t);
  drive(0);
  for (std::thread& th : others) th.join();
  std::uint64_t ops = 0, gets = 0, sets = 0, errors = 0;
  for (const Counts& n : counts) {
    ops += n.ops;
    gets += n.gets;
    sets += n.sets;
    errors += n.errors;
  }
  const double elapsed = std::chrono::duration<double>(clock::now() - t0).count();
  const double cpu = cpu_of(o.pids) - cpu0;
  const double self = own_cpu_seconds() - self0;
  std::printf(
      "requests %llu keys_read %llu sets %llu errors %llu seconds %.2f requests_per_s %.0f "
      "server_cpu_s %.3f server_cpu_us_per_request %.2f load_cpu_s %.3f\n",
      static_cast<unsigned long long>(ops), static_cast<unsigned long long>(gets),
      static_cast<unsigned long long>(sets), static_cast<unsigned long long>(errors), elapsed,
      static_cast<double>(ops) / elapsed, cpu, ops > 0 ? cpu * 1e6 / static_cast<double>(ops) : 0.0, self);
  return errors == 0 ? 0 : 1;
}
