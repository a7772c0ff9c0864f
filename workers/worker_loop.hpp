// The worker's loop, private to workers/: the Worker class, whose members live in worker.cpp (set-up,
// the epoll loop, signals, ticks), accepting.cpp (which listeners are watched, accepting, the
// connection pool) and connection_loop.cpp (the one connection loop and its framing seam, replies, the
// application hand-off).
#pragma once

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "server/protocol.hpp"
#include "workers/application_threads.hpp"
#include "workers/connection.hpp"
#include "workers/handoff.hpp"
#include "workers/http_framing.hpp"
#include "workers/loop_baton.hpp"
#include "workers/memcached_framing.hpp"
#include "workers/memcached_ring.hpp"
#include "workers/request_log.hpp"
#include "workers/uwsgi_framing.hpp"
#include "workers/worker.hpp"

namespace workers::loop {

using common::monotonic_ms;

constexpr int kMaxEvents = 32;
constexpr int kTickMs = 250;  // timeout checks
// epoll data: a Connection*, or one of these tags (user-space pointers never have bit 62 or 63 set).
constexpr std::uint64_t kBackendTag = std::uint64_t{1} << 63;   // libuv's backend fd
constexpr std::uint64_t kListenerTag = std::uint64_t{1} << 62;  // | the listening fd
constexpr std::uint64_t kHandoffTag = std::uint64_t{1} << 61;   // the hand-off queue's receiving end
constexpr int kAcceptPauseMs = 100;                             // accept pause when out of descriptors
constexpr std::size_t kSpoolReadBytes = 64 * 1024;              // one read of a body that goes to a file
// How long a refused client may go on sending before its connection is closed (nginx's lingering_time).
constexpr std::int64_t kLingerMs = 30000;
constexpr std::size_t kDrainBytesPerWake = 1 << 20;  // then other connections get their turn
// The standby (loop_baton.hpp) takes the loop from an application request on the loop's thread that
// has run kTakeoverDelay when it looks, which it does once per kStandbyPeriod while the worker is busy:
// a cache request waits behind such a request 4 ms at worst (delay + period), as it did with a standby
// that looked every 2 ms for a lend seen twice, which woke three times as often (docs/architecture.md).
constexpr std::chrono::microseconds kTakeoverDelay{1000};
constexpr std::chrono::microseconds kStandbyPeriod{3000};

// Set on a thread that lent the loop and found it taken: it unwinds to take_turns without touching
// the loop's state again (connection_loop.cpp).
inline thread_local bool t_loop_lost = false;

class Worker;
using ApplicationThreads = workers::ApplicationThreads<Worker, Connection>;

class Worker {
 public:
  explicit Worker(const WorkerSettings& settings);

  int run();

  // libuv callbacks (static trampolines call these)
  void on_ready(Connection* conn, std::uint32_t events);
  void on_signal(int signum);
  void on_tick();
  void on_application_finished();
  static void run_application(Worker* self, Connection* conn);  // on an application thread

 private:
  bool setup();
  bool drive();                   // runs the loop while this thread holds it; true when the loop is over
  void take_turns(bool holding);  // holds the loop or stands by, until the loop is over
  void take_over();               // the standby took the loop while its holder is in the application
  int finish_run();
  void accept_ready(const int* fds, int count);
  struct Listener;  // below
  void accept_from(const Listener& listener);
  void serve(Connection* conn);           // read what is there, handle complete requests, write replies
  bool read_available(Connection* conn);  // false = connection failed and was closed
  void frame_state(Connection* conn, std::size_t* want);
  bool start_spool(Connection* conn);                    // --post-buffering: the body goes to a file
  void spool_body(Connection* conn, std::size_t* want);  // moves body bytes from conn->in to the file
  Take refuse_unspooled(Connection* conn, std::string& note);
  void start_draining(Connection* conn);  // a refusal was sent: read and drop the rest, then close
  void drain(Connection* conn);
  bool ready_for_next_request(Connection* conn);
  bool dispatch(Connection* conn);      // runs conn->pending; false when the connection left the loop
  bool run_inline(Connection* conn);    // an application request on this thread; false as dispatch
  bool finish_reply(Connection* conn);  // true when the connection was closed
  bool reply_done(Connection* conn);
  bool write_reply(Connection* conn);                     // false = connection failed and was closed
  void wait_for(Connection* conn, std::uint32_t events);  // EPOLLIN or EPOLLOUT
  void release_closed();
  void close_connection(Connection* conn, bool orderly);
  void log_problem(Connection* conn, std::string_view what);
  void begin_graceful_stop();
  void update_accepting();
  std::int32_t app_backlog() const;
  bool takes_app_connections(std::int32_t backlog) const;
  void publish_busy(const server::Request& request);
  void hand_to_application(Connection* conn);
  // The shared queue of ready application requests (handoff_loop.cpp, handoff.hpp).
  bool has_free_thread() const;
  bool hand_off(Connection* conn);  // true: the request and its connection left for the queue
  void take_handoffs();             // runs queued requests while a thread is free
  void watch_handoffs(bool want);
  void let_go(Connection* conn);        // out of active_, descriptor closed, released after the batch
  bool start_reply(Connection* conn);   // true when the connection was closed
  bool serve_static(Connection* conn);  // a static file answered the request (never the application)
  // The connections waited on plus the application requests on the others (a stop's last line).
  std::size_t requests_in_flight() const;

  Connection* acquire();
  void release(Connection* conn);
  // The memcached listeners' io_uring thread (memcached_ring_worker.cpp): true when it serves them.
  bool start_memcached_ring();
  bool memcached_ring_busy() const;  // still serving connections (the stop waits for it)

  WorkerSettings settings_;
  server::Dispatcher dispatcher_;
  RequestAccounting accounting_;  // counters and the request log, at begin and finish of each request
  // What the listeners speak (see connection.hpp); listeners_ names each listening fd's framing.
  UwsgiFraming uwsgi_;
  UwsgiFraming persistent_;     // --persistent-socket
  HttpFraming http_;            // --http-socket
  MemcachedFraming memcached_;  // --memcached-socket
  struct Listener {
    int fd;
    Framing* framing;
    bool cache_path;       // --persistent-socket, --memcached-socket: still watched while saturated (cache
                           // clients' own paths)
    bool watched = false;  // in the epoll set
  };
  std::vector<Listener> listeners_;
  uv_loop_t loop_{};
  int epoll_fd_ = -1;
  uv_signal_t signals_[4]{};
  uv_timer_t tick_{};
  std::vector<Connection*> active_;  // connections waiting on the loop
  std::vector<std::unique_ptr<Connection>> all_;
  std::vector<Connection*> free_;
  bool stopping_ = false;
  bool exit_now_ = false;
  Recycler recycler_{settings_.recycle, monotonic_ms()};
  bool recycling_ = false;  // stopping because the Recycler said so: exit with kExitRecycled
  std::int64_t stop_deadline_ms_ = 0;
  common::RateLimitedLog problem_log_{20, 1};
  common::RateLimitedLog resource_log_{1, 10};
  std::vector<Connection*> closed_;  // closed during the current batch, released after it
  std::int64_t accept_paused_until_ms_ = 0;
  std::string note_;
  ApplicationThreads app_threads_;
  std::size_t in_application_ = 0;  // connections an application thread holds (or that wait for one)
  std::size_t last_listener_ = 0;   // index in listeners_ of the one accepted from last
  std::int32_t published_backlog_ = kNoAppBacklog;  // what our scoreboard slot says
  LoopBaton baton_;
  std::thread standby_;             // the second thread that can run the loop (with application threads)
  Connection* lent_for_ = nullptr;  // the request the loop was lent for (the holder's)
  Connection* adopted_ = nullptr;   // taken over while lent for this one: the other thread runs it
  std::thread::id main_thread_;
  bool failed_ = false;
  std::size_t cache_clients_ = 0;  // open connections of cache_path listeners: no lending meanwhile
  bool in_libuv_ = false;          // inside uv_run: no lending (libuv's pass must end on its thread)
  HandoffChannel handoff_{settings_.handoff_send_fd, settings_.handoff_receive_fd};
  bool handoff_watched_ = false;  // its receiving end is in the epoll set
  bool check_handoffs_ = false;   // a thread freed (or the tick): look at the queue before epoll_wait
  std::unique_ptr<char[]> handoff_buffer_;  // one message's bytes (kHandoffMaxBytes), made on first use
  MemcachedRing memcached_ring_;            // serves --memcached-socket when settings_.memcached_io_uring
  uv_async_t memcached_ring_stopped_{};     // wakes the loop when the ring has closed its last connection
};

}  // namespace workers::loop
