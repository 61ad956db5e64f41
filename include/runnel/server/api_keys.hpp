// API keys: random 256-bit secrets shown once, stored only as their SHA-256 in the
// database-wide table runnel_api_keys, each with a scope (read, submit, admin), an
// optional client it is bound to and an optional expiry. `runnel keys` and /v1/keys
// manage them; a KeyStore keeps the valid ones in memory for the HTTP server, so
// checking a key costs one hash and one lookup, never a database round trip.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "runnel/postgres/connection.hpp"
#include "runnel/server/http_message.hpp"

namespace runnel::server {

std::string_view ScopeName(Scope scope);
std::optional<Scope> ParseScope(std::string_view text);

// What a new key may do.
struct KeySpec {
  Scope scope = Scope::kSubmit;
  std::optional<std::string> client;             // bind the key to this client
  std::optional<std::chrono::seconds> lifetime;  // expires this long after creation
  std::string note;                              // free text, e.g. who holds it
};

// A key as listed: never its secret.
struct KeyInfo {
  int64_t id = 0;
  std::string prefix;  // the secret's first characters, to recognise it
  Scope scope = Scope::kSubmit;
  std::optional<std::string> client;
  std::string note;
  std::string created_at;  // ISO 8601, UTC
  std::optional<std::string> expires_at;
  std::optional<std::string> revoked_at;

  nlohmann::json ToJson() const;
};

struct CreatedKey {
  KeyInfo info;
  std::string secret;  // "rnl_" and 64 hex digits; not stored anywhere
};

// The hex SHA-256 of a secret, as stored.
std::string HashKey(std::string_view secret);

// Creates runnel_api_keys when missing. Throws DatabaseError.
void EnsureKeyTable(postgres::Connection& conn);
// Creates the table when missing and a key. Throws Error(InvalidInput) for an empty
// client name or a lifetime that is not positive, DatabaseError.
CreatedKey CreateKey(postgres::Connection& conn, const KeySpec& spec);
// Every key, revoked and expired ones included, oldest first (empty when the table
// does not exist).
std::vector<KeyInfo> ListKeys(postgres::Connection& conn);
// Revokes a key; false when no key has that id or it was revoked already.
bool RevokeKey(postgres::Connection& conn, int64_t id);

// The valid keys of a database, reloaded every `refresh`: a key revoked or created
// elsewhere takes effect within that time; expiry is checked on every use.
//
// Thread safety: every member may be called from any thread.
class KeyStore {
 public:
  explicit KeyStore(std::string conninfo, std::chrono::milliseconds refresh = std::chrono::milliseconds(1000));
  ~KeyStore();
  KeyStore(const KeyStore&) = delete;
  KeyStore& operator=(const KeyStore&) = delete;

  // Loads the keys once (throws DatabaseError), then keeps reloading them on a thread
  // of its own; a failed reload keeps the keys it had and is logged.
  void Start();
  void Stop();  // idempotent

  // The access a secret grants, or nullopt for an unknown, revoked or expired one.
  std::optional<Access> Authenticate(std::string_view secret) const;
  // True when no valid key exists.
  bool empty() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace runnel::server
