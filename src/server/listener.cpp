// sickle/server/listener.cpp — see listener.h.
#include "server/listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/error.h"
#include "base/log.h"
#include "server/metrics.h"
#include "server/openai.h"

namespace sickle::server {

namespace {

using Clock = std::chrono::steady_clock;

int ms_until(Clock::time_point t) {
  auto d = std::chrono::duration_cast<std::chrono::milliseconds>(t - Clock::now()).count();
  return int(std::clamp<int64_t>(d, 0, 1 << 30));
}

// Waits up to `ms` for `events` on fd; the revents (0 on timeout).
short wait_for(int fd, short events, int ms) {
  pollfd p{fd, events, 0};
  while (true) {
    int r = ::poll(&p, 1, ms);
    if (r > 0) return p.revents;
    if (r == 0 || errno != EINTR) return 0;
  }
}

std::string peer_ip(const sockaddr_storage& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, buf, sizeof buf);
  } else if (a.ss_family == AF_INET6) {
    const auto& a6 = reinterpret_cast<const sockaddr_in6&>(a);
    if (IN6_IS_ADDR_V4MAPPED(&a6.sin6_addr)) {  // one client, one key, whichever family it came by
      inet_ntop(AF_INET, a6.sin6_addr.s6_addr + 12, buf, sizeof buf);
    } else {
      inet_ntop(AF_INET6, &a6.sin6_addr, buf, sizeof buf);
    }
  }
  return buf;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

// A whole error response, sent before the connection closes.
std::string error_response(int status, const std::string& message, const char* code) {
  const std::string body = dump_json(ApiError(status, message, "", "invalid_request_error", code).to_json());
  return fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: "
      "close\r\n{}\r\n{}",
      status, reason_phrase(status), body.size(), status == 503 ? "Retry-After: 1\r\n" : "", body);
}

// Best effort: the socket is new or idle, so a short response fits its send buffer.
void send_now(int fd, const std::string& s) {
  (void)::send(fd, s.data(), s.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

// Room for `max_connections` sockets besides the model's and the process's own files: raise the
// soft limit towards the hard one if needed; the bound that fits.
int fit_fd_limit(int max_connections) {
  constexpr int kReserve = 64;
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return max_connections;
  const rlim_t want = rlim_t(max_connections) + kReserve;
  if (r.rlim_cur != RLIM_INFINITY && r.rlim_cur < want) {
    rlimit raised = r;
    raised.rlim_cur = r.rlim_max == RLIM_INFINITY ? want : std::min(want, r.rlim_max);
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) r = raised;
  }
  if (r.rlim_cur != RLIM_INFINITY && r.rlim_cur < want) {
    const int fit = std::max(1, int(r.rlim_cur) - kReserve);
    log_warn("serve: --max-connections {} lowered to {} (open files limited to {})", max_connections, fit,
             uint64_t(r.rlim_cur));
    return fit;
  }
  return max_connections;
}

}  // namespace

// ---- Connection (worker side) ------------------------------------------------------------

bool Connection::readable() const {
  if (off_ < buf_.size()) return true;
  if (Clock::now() >= deadline_) return false;
  return (wait_for(fd_, POLLIN, ms_until(deadline_)) & (POLLIN | POLLHUP | POLLERR)) != 0;
}

ssize_t Connection::read(char* p, size_t n) {
  if (off_ < buf_.size()) {
    n = std::min(n, buf_.size() - off_);
    std::memcpy(p, buf_.data() + off_, n);
    off_ += n;
    return ssize_t(n);
  }
  constexpr size_t kChunk = 16 << 10;
  while (true) {
    if (!readable()) return -1;
    // Small reads (httplib reads lines byte by byte) go through the buffer; what follows this
    // request there (a pipelined one) stays for the next.
    if (n < kChunk) {
      buf_.resize(kChunk);
      ssize_t r = ::recv(fd_, buf_.data(), kChunk, MSG_DONTWAIT);
      buf_.resize(r > 0 ? size_t(r) : 0);
      off_ = scanned_ = 0;
      if (r > 0) return read(p, n);
      if (r == 0) return 0;
    } else {
      ssize_t r = ::recv(fd_, p, n, MSG_DONTWAIT);
      if (r >= 0) return r;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
  }
}

ssize_t Connection::write(const char* p, size_t n) {
  while (true) {
    ssize_t r = ::send(fd_, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    if (!(wait_for(fd_, POLLOUT, int(write_timeout_.count())) & POLLOUT)) return -1;
  }
}

bool Connection::writable() const {
  if (!(wait_for(fd_, POLLOUT, int(write_timeout_.count())) & POLLOUT)) return false;
  // As httplib's own streams: a peer that closed its end is gone (data it sent is not a close).
  if (!(wait_for(fd_, POLLIN, 0) & (POLLIN | POLLHUP | POLLERR))) return true;
  char c;
  ssize_t r = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

// ---- Listener (poller side) ----------------------------------------------------------------

Listener::Listener(const std::string& host, int port, ListenerOptions options, Serve serve, Metrics* metrics)
    : opt_(options), serve_(std::move(serve)), metrics_(metrics) {
  opt_.n_workers = std::max(1, opt_.n_workers);
  opt_.max_connections = fit_fd_limit(std::max(1, opt_.max_connections));
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  const std::string port_str = std::to_string(port);
  if (int e = getaddrinfo(host.c_str(), port_str.c_str(), &hints, &res); e != 0)
    fail("serve: cannot bind {}:{}: {}", host, port, gai_strerror(e));
  int err = 0;
  for (addrinfo* a = res; a && listen_fd_ < 0; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0) {
      listen_fd_ = fd;
    } else {
      err = errno;
      ::close(fd);
    }
  }
  freeaddrinfo(res);
  if (listen_fd_ < 0)
    fail("serve: cannot bind {}:{} ({})", host, port, err ? std::strerror(err) : "no address");
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(a).sin6_port
                                        : reinterpret_cast<sockaddr_in&>(a).sin_port);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  SICKLE_CHECK(epoll_fd_ >= 0 && wake_fd_ >= 0);
  for (int fd : {listen_fd_, wake_fd_}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
}

Listener::~Listener() {
  stop();
  for (auto& [fd, c] : conns_) ::close(fd);
  for (int fd : {listen_fd_, epoll_fd_, wake_fd_})
    if (fd >= 0) ::close(fd);
}

void Listener::stop() {
  stopping_ = true;
  uint64_t one = 1;
  if (wake_fd_ >= 0) (void)!::write(wake_fd_, &one, sizeof one);
  cv_.notify_all();
}

void Listener::run() {
  for (int i = 0; i < opt_.n_workers; ++i) workers_.emplace_back([this] { worker_loop(); });
  std::vector<epoll_event> evs(256);
  Clock::time_point accept_paused_until{};
  bool accepting = true;
  while (!stopping_) {
    // Deadlines: expire what is due, sleep until the next one (at most 1 s).
    const auto now = Clock::now();
    auto next = now + std::chrono::seconds(1);
    std::vector<Connection*> due;
    for (auto& [fd, c] : conns_) {
      if (c->state_ == Connection::State::kBusy) continue;
      if (c->deadline_ <= now) due.push_back(c.get());
      else next = std::min(next, c->deadline_);
    }
    for (Connection* c : due) {
      if (c->state_ == Connection::State::kHead && c->buf_.size() > c->off_) {
        drop(*c, 408, "header_timeout");
      } else {
        close_conn(*c);  // idle, silent, or done draining
      }
    }
    if (!accepting && now >= accept_paused_until) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = listen_fd_;
      epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
      accepting = true;
    }
    if (!accepting) next = std::min(next, accept_paused_until);
    int n = epoll_wait(epoll_fd_, evs.data(), int(evs.size()), ms_until(next));
    for (int i = 0; i < n; ++i) {
      const int fd = evs[i].data.fd;
      if (fd == listen_fd_) {
        if (!accept_all()) {  // out of descriptors: retry in a moment
          epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
          accepting = false;
          accept_paused_until = Clock::now() + std::chrono::milliseconds(100);
        }
      } else if (fd == wake_fd_) {
        uint64_t v;
        (void)!::read(wake_fd_, &v, sizeof v);
        std::vector<std::pair<Connection*, bool>> served;
        {
          std::lock_guard lk(mu_);
          served.swap(served_);
        }
        for (auto& [c, keep] : served) on_served(c, keep);
      } else if (auto it = conns_.find(fd); it != conns_.end()) {
        on_readable(*it->second);
      }
    }
  }
  // Stopped: no new connections; the requests being served finish (httplib's streams see
  // the server stopping), then everything closes.
  ::close(listen_fd_);
  listen_fd_ = -1;
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  for (auto& [fd, c] : conns_) ::close(fd);
  conns_.clear();
  per_ip_.clear();
}

bool Listener::accept_all() {
  while (true) {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return errno != EMFILE && errno != ENFILE;  // EAGAIN: all taken
    }
    std::string ip = peer_ip(a);
    const int per_ip = per_ip_.count(ip) ? per_ip_[ip] : 0;
    if (int(conns_.size()) >= opt_.max_connections ||
        (opt_.max_connections_per_ip > 0 && per_ip >= opt_.max_connections_per_ip)) {
      const bool total = int(conns_.size()) >= opt_.max_connections;
      send_now(fd, error_response(
                       503,
                       total ? fmt::format("Too many connections (server limit {}).", opt_.max_connections)
                             : fmt::format("Too many connections from {} (limit {} per client).", ip,
                                           opt_.max_connections_per_ip),
                       "too_many_connections"));
      ::close(fd);
      if (metrics_) metrics_->on_dropped("connection_limit");
      continue;
    }
    // Streaming writes one small SSE event per step: without TCP_NODELAY, Nagle holds the
    // second small segment until the client's delayed ACK (~40 ms on Linux loopback).
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    auto c = std::make_unique<Connection>();
    c->fd_ = fd;
    c->ip_ = std::move(ip);
    c->write_timeout_ = opt_.write_timeout;
    c->state_ = Connection::State::kHead;
    c->deadline_ = Clock::now() + opt_.header_timeout;
    ++per_ip_[c->ip_];
    Connection& ref = *c;
    conns_.emplace(fd, std::move(c));
    watch(ref);
  }
}

void Listener::watch(Connection& c) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.fd = c.fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, c.fd_, &ev);
}

void Listener::on_readable(Connection& c) {
  char tmp[16 << 10];
  if (c.state_ == Connection::State::kLinger) {
    for (int i = 0; i < 16; ++i) {  // a share per wakeup; the rest at the next
      ssize_t r = ::recv(c.fd_, tmp, sizeof tmp, MSG_DONTWAIT);
      if (r > 0) continue;
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
      return close_conn(c);
    }
    return;
  }
  while (true) {
    ssize_t r = ::recv(c.fd_, tmp, sizeof tmp, MSG_DONTWAIT);
    if (r == 0) return close_conn(c);  // the client left (mid-head: nobody to answer)
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      return close_conn(c);
    }
    if (c.state_ == Connection::State::kIdle) {  // the next request starts: its head's clock too
      c.state_ = Connection::State::kHead;
      c.deadline_ = Clock::now() + opt_.header_timeout;
    }
    c.buf_.append(tmp, size_t(r));
    const size_t from = std::max(c.off_, c.scanned_);
    if (c.buf_.find("\r\n\r\n", from) != std::string::npos) return dispatch(c);
    c.scanned_ = c.buf_.size() >= 3 ? c.buf_.size() - 3 : 0;
    if (c.buf_.size() - c.off_ > opt_.max_head_bytes) return drop(c, 431, "header_too_large");
  }
}

void Listener::dispatch(Connection& c) {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd_, nullptr);
  c.state_ = Connection::State::kBusy;
  c.deadline_ = Clock::now() + opt_.body_timeout;
  c.close_after_ = false;
  {
    std::lock_guard lk(mu_);
    ready_.push_back(&c);
  }
  cv_.notify_one();
}

void Listener::worker_loop() {
  while (true) {
    Connection* c = nullptr;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !ready_.empty(); });
      if (stopping_) return;  // what is still queued closes with the rest
      c = ready_.front();
      ready_.pop_front();
    }
    bool keep = false;
    try {
      keep = serve_(*c);
    } catch (const std::exception& e) {
      log_warn("serve: connection from {}: {}", c->ip_, e.what());
    }
    {
      std::lock_guard lk(mu_);
      served_.emplace_back(c, keep && !c->close_after_);
    }
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }
}

void Listener::on_served(Connection* c, bool keep) {
  if (!keep) {
    // Half-close, then drain what the client still sends until it closes too (or for
    // `linger`): closing with unread input would reset the connection, and the client could
    // lose the response it has not read yet (a 401 or 413 sent before its body).
    ::shutdown(c->fd_, SHUT_WR);
    c->state_ = Connection::State::kLinger;
    c->deadline_ = Clock::now() + opt_.linger;
    c->buf_.clear();
    c->off_ = c->scanned_ = 0;
    return watch(*c);
  }
  c->buf_.erase(0, c->off_);
  c->off_ = c->scanned_ = 0;
  if (c->buf_.find("\r\n\r\n") != std::string::npos) return dispatch(*c);  // pipelined
  if (c->buf_.size() > opt_.max_head_bytes) return drop(*c, 431, "header_too_large");
  c->state_ = c->buf_.empty() ? Connection::State::kIdle : Connection::State::kHead;
  c->deadline_ = Clock::now() + (c->buf_.empty() ? opt_.idle_timeout : opt_.header_timeout);
  watch(*c);
}

void Listener::drop(Connection& c, int status, const char* reason) {
  const std::string msg =
      status == 408
          ? fmt::format("The request head did not arrive within {} s.", opt_.header_timeout.count() / 1000.0)
          : fmt::format("The request head exceeds {} bytes.", opt_.max_head_bytes);
  send_now(c.fd_, error_response(status, msg, reason));
  if (metrics_) metrics_->on_dropped(reason);
  log_debug("serve: {} from {}: {}", status, c.ip_, msg);
  if (c.state_ != Connection::State::kBusy) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd_, nullptr);
  on_served(&c, false);
}

void Listener::close_conn(Connection& c) {
  const int fd = c.fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  ::close(fd);
  if (auto it = per_ip_.find(c.ip_); it != per_ip_.end() && --it->second <= 0) per_ip_.erase(it);
  conns_.erase(fd);  // destroys c
}

}  // namespace sickle::server
