// sickle/server/peer.h — seeing that an HTTP client went away while its handler waits.
//
// cpp-httplib 0.11 checks that the peer is alive only around writes (before each call of a
// streaming content provider, and when a write fails); a handler gets no access to its
// connection. So a non-streaming request, whose handler waits for the whole generation before
// anything is written, would keep generating for a client that left. The handler's thread
// owns its connection until it returns, so the socket can be found once by its two endpoints
// (Request::local_addr/port, remote_addr/port) and polled.
#pragma once

#include <chrono>
#include <string>

namespace sickle::server {

// This process's socket of the TCP connection with these endpoints (addresses as numeric
// strings, as httplib writes them), or -1.
int find_tcp_socket(const std::string& local_addr, int local_port, const std::string& remote_addr,
                    int remote_port);

// True when the peer closed its end (FIN or RST): it cannot be waiting for a response.
// Never blocks; data the peer sent (a pipelined request) does not count as closed.
bool peer_closed(int fd);

// A connection watched from its handler: gone() looks at the socket at most once per
// `interval` (the first look, which finds the socket, only after one interval, so short
// requests cost nothing). If the socket cannot be found, the peer is never reported gone.
class PeerWatch {
 public:
  PeerWatch(std::string local_addr, int local_port, std::string remote_addr, int remote_port,
            std::chrono::milliseconds interval = std::chrono::milliseconds(50));
  bool gone();

 private:
  std::string local_addr_, remote_addr_;
  int local_port_, remote_port_;
  std::chrono::milliseconds interval_;
  std::chrono::steady_clock::time_point next_;
  int fd_ = -2;  // -2: not looked up yet; -1: not found
  bool gone_ = false;
};

}  // namespace sickle::server
