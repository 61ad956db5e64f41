#include "runnel/postgres/pool.hpp"

namespace runnel::postgres {

ConnectionPool::Lease ConnectionPool::Acquire() {
  while (true) {
    std::unique_ptr<Connection> conn;
    {
      MutexLock lock(mutex_);
      if (idle_.empty()) break;
      conn = std::move(idle_.back());
      idle_.pop_back();
    }
    if (conn->IsAlive()) return Lease(this, std::move(conn));
  }
  return Lease(this, std::make_unique<Connection>(Connection::Open(conninfo_, part_)));
}

void ConnectionPool::DropIdle() {
  std::vector<std::unique_ptr<Connection>> dropped;
  MutexLock lock(mutex_);
  dropped.swap(idle_);
}

void ConnectionPool::Return(std::unique_ptr<Connection> conn) {
  // A connection left inside a transaction (an exception between BEGIN and the
  // Transaction's rollback cannot happen, but be safe) or broken is dropped.
  if (!conn->IsOpen() || PQtransactionStatus(conn->raw()) != PQTRANS_IDLE) return;
  MutexLock lock(mutex_);
  if (idle_.size() < max_idle_) idle_.push_back(std::move(conn));
}

}  // namespace runnel::postgres
