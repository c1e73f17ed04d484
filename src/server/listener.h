// sickle/server/listener.h — the server's connections: accept, bounds, whole-head deadline.
//
// cpp-httplib 0.11 hands every accepted socket to a worker thread at once; the worker reads
// the request head with a per-read timeout only, and waits for a kept-alive connection's next
// request on the same thread. So a client sending one header byte per second holds a worker
// forever, and `--http-threads` such clients stall every other client, /health included.
// Here the server owns its sockets instead: one thread multiplexes every connection that is
// not being served (accepting, reading request heads into a buffer, idling between keep-alive
// requests, draining before close), and a worker gets a connection only once its whole head
// has arrived; the worker then runs httplib's request processing on it (http.cpp).
//
// Bounds: open connections in total and per client address (beyond either: 503 and close);
// the whole head within `header_timeout` of its first byte (408 and close) and within
// `max_head_bytes` (431); the body (read by the worker) within `body_timeout` of the head.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace sickle::server {

class Metrics;

struct ListenerOptions {
  int n_workers = 64;
  int max_connections = 1024;
  int max_connections_per_ip = 256;  // 0 = only the total bound
  std::chrono::milliseconds header_timeout{10000};
  std::chrono::milliseconds body_timeout{60000};
  std::chrono::milliseconds idle_timeout{5000};    // between keep-alive requests
  std::chrono::milliseconds write_timeout{30000};  // per write that makes no progress
  std::chrono::milliseconds linger{2000};          // draining a closed connection's input
  size_t max_head_bytes = 64 << 10;
};

// One connection as its worker sees it while serving one request. Reads come from the
// buffered head first, then from the socket until the body deadline.
class Connection {
 public:
  // -1 on error or past the body deadline, 0 at end of input.
  ssize_t read(char* p, size_t n);
  // Waits (at most until the body deadline) until a read would not block.
  bool readable() const;
  // Writes at least one byte unless the peer makes no room for `write_timeout`; -1 then.
  ssize_t write(const char* p, size_t n);
  // Room to write within `write_timeout`, and the peer has not closed its end.
  bool writable() const;
  // The response ends the connection (part of the request was left unread).
  void close_after() { close_after_ = true; }
  bool closing() const { return close_after_; }
  int fd() const { return fd_; }
  const std::string& peer_address() const { return ip_; }

 private:
  friend class Listener;
  enum class State { kHead, kIdle, kBusy, kLinger };
  int fd_ = -1;
  std::string ip_;
  std::string buf_;     // received, not yet consumed: a head (and whatever followed it)
  size_t off_ = 0;      // consumed prefix of buf_
  size_t scanned_ = 0;  // buf_ holds no head end before this offset
  State state_ = State::kHead;
  std::chrono::steady_clock::time_point deadline_;
  std::chrono::milliseconds write_timeout_{30000};
  bool close_after_ = false;
};

class Listener {
 public:
  // Serves one request on a worker thread; returns whether the connection may stay open.
  using Serve = std::function<bool(Connection&)>;

  // Binds host:port (port 0: any free one); throws sickle::Error naming them on failure.
  Listener(const std::string& host, int port, ListenerOptions options, Serve serve,
           Metrics* metrics = nullptr);
  ~Listener();
  int port() const { return port_; }
  int listen_fd() const { return listen_fd_; }
  // Accepts and serves until stop(); then waits for the requests being served.
  void run();
  void stop();  // any thread
  const ListenerOptions& options() const { return opt_; }

 private:
  using Clock = std::chrono::steady_clock;
  bool accept_all();  // false: out of file descriptors
  void on_readable(Connection& c);
  void dispatch(Connection& c);
  void on_served(Connection* c, bool keep);
  void watch(Connection& c);
  void drop(Connection& c, int status, const char* reason);
  void close_conn(Connection& c);
  void worker_loop();

  ListenerOptions opt_;
  Serve serve_;
  Metrics* metrics_;
  int listen_fd_ = -1, epoll_fd_ = -1, wake_fd_ = -1, port_ = 0;
  std::atomic<bool> stopping_{false};

  // Poller thread only.
  std::unordered_map<int, std::unique_ptr<Connection>> conns_;
  std::unordered_map<std::string, int> per_ip_;

  // Workers: connections with a complete head, and those served (back to the poller).
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Connection*> ready_;
  std::vector<std::pair<Connection*, bool>> served_;
  std::vector<std::thread> workers_;
};

}  // namespace sickle::server
