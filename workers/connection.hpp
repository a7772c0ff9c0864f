// One client connection of a worker, and the seam between the worker's loop and what the connection
// speaks (Framing). Private to workers/.
//
// The loop (worker.cpp) owns everything a connection has whatever it speaks: the socket, the input
// buffer, the reply being written, timeouts, the hand-off to an application thread. A Framing owns
// only its syntax and its per-connection state (a FramingSession kept with the pooled Connection):
// how bytes become a request, how a handled reply is shaped for the wire. One connection loop serves
// them all; adding a protocol is a new Framing and a listener that names it (docs/architecture.md,
// "The connection loop").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "server/protocol.hpp"
#include "server/static_files.hpp"
#include "workers/body_spool.hpp"
#include "workers/byte_buffer.hpp"

namespace workers {

inline constexpr std::size_t kInitialBuffer =
    4096;  // a connection's first buffer: most requests are far smaller

class Framing;

// A framing's own per-connection state, kept with the pooled Connection across reuses (so a kept
// buffer inside it is reused too).
struct FramingSession {
  virtual ~FramingSession() = default;
  const Framing* owner = nullptr;
};

struct Connection {
  int fd = -1;
  Framing* framing = nullptr;               // what the connection speaks (its listener's)
  bool cache_client = false;                // from a cache clients' listener (Listener::cache_path)
  std::uint16_t listener = 0;               // its listener's index (the same in every worker: hand-off)
  std::unique_ptr<FramingSession> session;  // the framing's state (owner == framing once attached)
  bool registered = false;                  // waited on by the loop: in Worker::active_ (timeouts, stop)
  bool in_epoll = false;                    // in the worker's epoll set
  std::uint32_t watching = 0;               // the epoll events asked for: EPOLLIN or EPOLLOUT
  ByteBuffer in;
  server::FrameStatus frame_status = server::FrameStatus::incomplete;  // of what `in` holds (Framing::frame)
  server::Reply reply;
  std::size_t reply_written = 0;  // bytes of head+body already sent
  bool writing = false;
  bool persistent = false;        // the connection is kept between requests (the reply did not close it)
  bool peer_closed = false;       // read returned EOF
  bool socket_drained = false;    // the last read returned less than asked: wait for readability
  server::Request pending;        // the request being handled (views into `in` or the session's buffers)
  bool in_application = false;    // an application thread owns the request and the reply right now
  std::size_t request_bytes = 0;  // bytes of `in` the request being handled takes (consumed once replied)
  std::int64_t started_ns = 0;    // when `pending` was handed to its handler (request accounting)
  std::int64_t deadline_ms = 0;   // socket timeout: when we give up waiting for the client
  std::size_t active_index = 0;   // position in Worker::active_
  BodySpool spool;                // the request's body while it goes to a file (--post-buffering)
  bool linger = false;            // a refusal: after the reply, read and drop what the client still sends
  bool draining = false;          // lingering: the reply is sent, the input is read and dropped
  std::int64_t drain_until_ms = 0;
};

// What the loop does with a framed request (Framing::take_request).
enum class Take {
  dispatch,  // conn.pending (and conn.request_bytes) hold a request for the dispatcher or the application
  replied,   // the framing answered itself in conn.reply (conn.request_bytes set): send it
  rejected,  // a bad request (counted, the note logged): send conn.reply if any (it closes), else close
};

class Framing {
 public:
  virtual ~Framing() = default;
  // A connection accepted on `listen_fd`, one of this framing's listeners: give it a fresh session.
  virtual void attach(Connection& conn, int listen_fd) = 0;
  // Frames what conn.in holds after a read (resuming where the last call stopped, if it can) and
  // returns the status; *want is the buffer size to make room for before the next read.
  virtual server::FrameStatus frame(Connection& conn, std::size_t* want) = 0;
  // The request is incomplete and the client still sending: what it must be told first, if anything.
  virtual void waiting(Connection& conn) { (void)conn; }
  // The client closed before its request was complete: `note` gets the log line's text; true when
  // that counts as a bad request.
  virtual bool truncated(Connection& conn, std::string& note) = 0;
  // The frame is complete or invalid: what the loop does with it (see Take); `note` (empty on entry)
  // gets the log line's text when something was wrong.
  virtual Take take_request(Connection& conn, std::string& note) = 0;
  // A dispatched request was handled (on the loop thread): shape conn.reply for the wire and get ready
  // for the connection's next request. Sets conn.reply.close_after when the connection must close.
  virtual void finish(Connection& conn, std::string& note) {
    (void)conn;
    (void)note;
  }
  // What a reply the worker builds itself (a static file, server/static_files.hpp) must say about the
  // connection: whether it speaks HTTP to the client and whether the request lets it stay open.
  virtual server::StaticConnection direct_reply_context(const Connection& conn) const {
    (void)conn;
    return {};
  }
  // Whether an idle connection stays open past the socket timeout (until the server stops), as
  // memcached's clients expect of their pooled connections.
  virtual bool keeps_idle_connections() const { return false; }
  // The connection is being closed (before its descriptor is).
  virtual void closed(Connection& conn) { (void)conn; }
  // The request is incomplete, its head is in and its application body, of a length announced up
  // front, is still arriving: where that body starts in conn.in and its length (the loop may spool it
  // to a file: --post-buffering). False when there is no such body yet (or it cannot be spooled).
  virtual bool fixed_body(const Connection& conn, std::size_t* start, std::uint64_t* length) const {
    (void)conn;
    (void)start;
    (void)length;
    return false;
  }
  // The loop moved that whole body into conn.spool: the request is complete as its head alone (in
  // conn.in, followed by what the client sent after the body); take_request comes next.
  virtual void body_spooled(Connection& conn) { (void)conn; }

 protected:
  // The session of `conn` as this framing's type, a fresh one when it had another framing's.
  // In attach(): the session of `conn` as this framing's type, a new one when it had another framing's
  // (or none); the caller resets what a kept one still holds.
  template <typename Session>
  Session& attach_session(Connection& conn) const {
    if (!conn.session || conn.session->owner != this) {
      conn.session = std::make_unique<Session>();
      conn.session->owner = this;
    }
    return static_cast<Session&>(*conn.session);
  }
  // Everywhere else: the session attach() gave `conn`.
  template <typename Session>
  static Session& session(Connection& conn) {
    return static_cast<Session&>(*conn.session);
  }
};

}  // namespace workers
