// sickle/server/peer.cpp — see peer.h.
#include "server/peer.h"

#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>

namespace sickle::server {

namespace {

// Port and numeric host of a socket address (httplib's get_remote_ip_and_port does the same).
bool endpoint_of(const sockaddr_storage& a, socklen_t len, std::string& host, int& port) {
  if (a.ss_family == AF_INET) port = ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port);
  else if (a.ss_family == AF_INET6) port = ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
  else return false;
  char buf[NI_MAXHOST];
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&a), len, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST) !=
      0)
    return false;
  host = buf;
  return true;
}

}  // namespace

int find_tcp_socket(const std::string& local_addr, int local_port, const std::string& remote_addr,
                    int remote_port) {
  if (local_port <= 0 || remote_port <= 0) return -1;
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int exact = -1, by_ports = -1, n_by_ports = 0;
  const int dir_fd = dirfd(dir);
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dir_fd) continue;
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    std::string host;
    int port = -1;
    // getsockname fails (ENOTSOCK) for everything but sockets: cheap filtering.
    if (getsockname(int(fd), reinterpret_cast<sockaddr*>(&a), &len) != 0) continue;
    if (!endpoint_of(a, len, host, port) || port != local_port) continue;
    const bool local_same = host == local_addr;
    len = sizeof a;
    if (getpeername(int(fd), reinterpret_cast<sockaddr*>(&a), &len) != 0)
      continue;  // e.g. the listening socket
    if (!endpoint_of(a, len, host, port) || port != remote_port) continue;
    if (local_same && host == remote_addr) {
      exact = int(fd);
      break;
    }
    by_ports = int(fd);
    ++n_by_ports;
  }
  closedir(dir);
  if (exact >= 0) return exact;
  // Addresses spelled differently (e.g. an IPv4-mapped IPv6 peer): unambiguous ports suffice.
  return n_by_ports == 1 ? by_ports : -1;
}

bool peer_closed(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, short(POLLIN | POLLRDHUP), 0};
  int r = poll(&p, 1, 0);
  if (r <= 0 || (p.revents & POLLNVAL)) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
  if (p.revents & POLLIN) {
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }
  return false;
}

PeerWatch::PeerWatch(std::string local_addr, int local_port, std::string remote_addr, int remote_port,
                     std::chrono::milliseconds interval)
    : local_addr_(std::move(local_addr)),
      remote_addr_(std::move(remote_addr)),
      local_port_(local_port),
      remote_port_(remote_port),
      interval_(interval),
      next_(std::chrono::steady_clock::now() + interval) {}

bool PeerWatch::gone() {
  if (gone_) return true;
  auto now = std::chrono::steady_clock::now();
  if (now < next_) return false;
  next_ = now + interval_;
  if (fd_ == -2) fd_ = find_tcp_socket(local_addr_, local_port_, remote_addr_, remote_port_);
  gone_ = peer_closed(fd_);
  return gone_;
}

}  // namespace sickle::server
