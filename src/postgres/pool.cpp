#include "runnel/postgres/pool.hpp"

namespace runnel::postgres {

ConnectionPool::Lease ConnectionPool::Acquire() {
  {
    std::lock_guard lock(mutex_);
    while (!idle_.empty()) {
      auto conn = std::move(idle_.back());
      idle_.pop_back();
      if (conn->IsOpen()) return Lease(this, std::move(conn));
    }
  }
  return Lease(this, std::make_unique<Connection>(Connection::Open(conninfo_)));
}

void ConnectionPool::Return(std::unique_ptr<Connection> conn) {
  // A connection left inside a transaction (an exception between BEGIN and the
  // Transaction's rollback cannot happen, but be safe) or broken is dropped.
  if (!conn->IsOpen() || PQtransactionStatus(conn->raw()) != PQTRANS_IDLE) return;
  std::lock_guard lock(mutex_);
  if (idle_.size() < max_idle_) idle_.push_back(std::move(conn));
}

}  // namespace runnel::postgres
