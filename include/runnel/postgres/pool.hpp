// A pool of connections for request handlers: Acquire() lends one (opening it when
// none is idle); the lease gives it back on destruction unless the connection broke.
// An idle connection the server closed (a restart) is noticed before it is lent, and
// Run() retries an operation once on a fresh connection when its connection is lost,
// so a database restart costs no client a failed request once the server is back.
//
// Thread safety: Acquire may be called from any thread; a lease and its connection
// belong to the thread holding it.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runnel/core/mutex.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::postgres {

class ConnectionPool {
 public:
  // `max_idle`: connections kept open between uses. `part` names every session the
  // pool opens (Connection::ApplicationName), whichever thread opens it.
  explicit ConnectionPool(std::string conninfo, size_t max_idle = 16, std::string part = "")
      : conninfo_(std::move(conninfo)), max_idle_(max_idle), part_(std::move(part)) {}

  class Lease {
   public:
    Lease(ConnectionPool* pool, std::unique_ptr<Connection> conn) : pool_(pool), conn_(std::move(conn)) {}
    Lease(Lease&&) = default;
    Lease& operator=(Lease&&) = default;
    ~Lease() {
      if (pool_ != nullptr && conn_) pool_->Return(std::move(conn_));
    }
    Connection& operator*() { return *conn_; }
    Connection* operator->() { return conn_.get(); }

   private:
    ConnectionPool* pool_;  // non-owning; outlives the lease
    std::unique_ptr<Connection> conn_;
  };

  // Throws DatabaseError when a new connection cannot be opened.
  Lease Acquire();

  // Runs `operation(Connection&)` on a lent connection. When the connection turns out
  // lost (DatabaseError::IsConnectionLost), every idle connection is dropped (they
  // shared the server that went away) and the operation runs once more on a new one.
  // Only for operations that may run twice: reads, or one transaction.
  template <typename Operation>
  auto Run(Operation&& operation) {
    try {
      auto lease = Acquire();
      return operation(*lease);
    } catch (const DatabaseError& e) {
      if (!e.IsConnectionLost()) throw;
      DropIdle();
    }
    auto lease = Acquire();
    return operation(*lease);
  }

  // Closes every idle connection.
  void DropIdle();

 private:
  void Return(std::unique_ptr<Connection> conn);

  std::string conninfo_;
  size_t max_idle_;
  std::string part_;
  Mutex mutex_;
  std::vector<std::unique_ptr<Connection>> idle_ GUARDED_BY(mutex_);
};

}  // namespace runnel::postgres
