#include "runnel/server/api_keys.hpp"
#include "runnel/core/mutex.hpp"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <array>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "runnel/core/error.hpp"
#include "runnel/core/thread_name.hpp"

namespace runnel::server {

using postgres::Params;

namespace {

constexpr std::string_view kSecretPrefix = "rnl_";
constexpr size_t kShownChars = 12;  // "rnl_" and 8 hex digits: 32 of the 256 bits
constexpr std::string_view kThreadName = "api-keys";  // the reloading thread's, and its session's

std::string Hex(const unsigned char* bytes, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return out;
}

std::string NewSecret() {
  std::array<unsigned char, 32> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    throw Error(ErrorCode::Unavailable, "the system's random number generator failed: no key was created");
  }
  return std::string(kSecretPrefix) + Hex(bytes.data(), bytes.size());
}

constexpr std::string_view kCreateTableSql =
    "CREATE TABLE IF NOT EXISTS runnel_api_keys ("
    "id bigserial PRIMARY KEY, hash text NOT NULL UNIQUE, prefix text NOT NULL, "
    "scope text NOT NULL CHECK (scope IN ('read', 'submit', 'admin')), client text, note text NOT NULL DEFAULT '', "
    "created_at timestamptz NOT NULL DEFAULT now(), expires_at timestamptz, revoked_at timestamptz)";

// The columns of a listing, read by name in ReadKeyInfo.
std::string KeyInfoSelect() {
  return fmt::format("SELECT id, prefix, scope, client, note, {} AS created_at, {} AS expires_at, {} AS revoked_at ",
                     postgres::IsoTimestampSql("created_at"), postgres::IsoTimestampSql("expires_at"),
                     postgres::IsoTimestampSql("revoked_at"));
}

KeyInfo ReadKeyInfo(const postgres::Result& r, int row) {
  KeyInfo info;
  info.id = r.Get<int64_t>(row, r.ColumnIndex("id"));
  info.prefix = r.Get<std::string>(row, r.ColumnIndex("prefix"));
  info.scope = ParseScope(r.Get<std::string>(row, r.ColumnIndex("scope"))).value_or(Scope::kRead);
  info.client = r.GetOptional<std::string>(row, r.ColumnIndex("client"));
  info.note = r.Get<std::string>(row, r.ColumnIndex("note"));
  info.created_at = r.Get<std::string>(row, r.ColumnIndex("created_at"));
  info.expires_at = r.GetOptional<std::string>(row, r.ColumnIndex("expires_at"));
  info.revoked_at = r.GetOptional<std::string>(row, r.ColumnIndex("revoked_at"));
  return info;
}

bool KeyTableExists(postgres::Connection& conn) {
  return postgres::TableExists(conn, "runnel_api_keys");
}

}  // namespace

std::string_view ScopeName(Scope scope) {
  switch (scope) {
    case Scope::kRead: return "read";
    case Scope::kSubmit: return "submit";
    case Scope::kAdmin: return "admin";
  }
  return "read";
}

std::optional<Scope> ParseScope(std::string_view text) {
  for (Scope s : {Scope::kRead, Scope::kSubmit, Scope::kAdmin}) {
    if (text == ScopeName(s)) return s;
  }
  return std::nullopt;
}

nlohmann::json KeyInfo::ToJson() const {
  auto optional = [](const std::optional<std::string>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
  return {{"id", id},
          {"prefix", prefix},
          {"scope", ScopeName(scope)},
          {"client", optional(client)},
          {"note", note},
          {"created_at", created_at},
          {"expires_at", optional(expires_at)},
          {"revoked_at", optional(revoked_at)}};
}

std::string HashKey(std::string_view secret) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (EVP_Digest(secret.data(), secret.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1) {
    throw Error(ErrorCode::Unavailable, "SHA-256 is not available from OpenSSL");
  }
  return Hex(digest.data(), length);
}

void EnsureKeyTable(postgres::Connection& conn) {
  if (KeyTableExists(conn)) return;
  // Processes starting together: CREATE ... IF NOT EXISTS alone races (one of them
  // fails on the sequence's or the table's name), so they take the migration lock.
  postgres::Transaction tx(conn);
  postgres::LockMigrations(conn);
  conn.Exec(kCreateTableSql);
  tx.Commit();
}

CreatedKey CreateKey(postgres::Connection& conn, const KeySpec& spec) {
  if (spec.client && spec.client->empty()) throw Error(ErrorCode::InvalidInput, "a key's client must not be empty");
  if (spec.lifetime && spec.lifetime->count() <= 0) {
    throw Error(ErrorCode::InvalidInput, "a key's lifetime must be positive");
  }
  EnsureKeyTable(conn);
  CreatedKey created;
  created.secret = NewSecret();
  Params params;
  params.Add(HashKey(created.secret)).Add(created.secret.substr(0, kShownChars)).Add(ScopeName(spec.scope));
  params.Add(spec.client).Add(spec.note);
  params.Add(spec.lifetime ? std::optional<int64_t>(spec.lifetime->count()) : std::nullopt);
  auto r = conn.Exec(
      "WITH k AS (INSERT INTO runnel_api_keys (hash, prefix, scope, client, note, expires_at) "
      "VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6)) RETURNING *) " +
          KeyInfoSelect() + "FROM k",
      params);
  created.info = ReadKeyInfo(r, 0);
  return created;
}

std::vector<KeyInfo> ListKeys(postgres::Connection& conn) {
  std::vector<KeyInfo> keys;
  if (!KeyTableExists(conn)) return keys;
  auto r = conn.Exec(KeyInfoSelect() + "FROM runnel_api_keys ORDER BY id");
  for (int i = 0; i < r.rows(); ++i) keys.push_back(ReadKeyInfo(r, i));
  return keys;
}

bool RevokeKey(postgres::Connection& conn, int64_t id) {
  if (!KeyTableExists(conn)) return false;
  return conn.Exec("UPDATE runnel_api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
                   Params().Add(id))
             .AffectedRows() == 1;
}

// The valid keys by hash, with their expiry as seconds since the epoch (0: none).
struct StoredKey {
  Access access;
  double expires = 0;
};
using KeyMap = std::unordered_map<std::string, StoredKey>;

struct KeyStore::Impl {
  std::string conninfo;
  std::chrono::milliseconds refresh;
  std::unique_ptr<postgres::Connection> conn;  // the reloading thread's

  mutable Mutex mutex;
  std::shared_ptr<const KeyMap> keys GUARDED_BY(mutex) = std::make_shared<KeyMap>();
  bool stopping GUARDED_BY(mutex) = false;
  std::condition_variable_any wake;
  std::thread thread;

  std::shared_ptr<const KeyMap> Snapshot() const {
    MutexLock lock(mutex);
    return keys;
  }

  std::shared_ptr<const KeyMap> Read() {
    // The first read runs on Start's caller: named for the reloading thread.
    if (!conn || !conn->IsOpen())
      conn = std::make_unique<postgres::Connection>(postgres::Connection::Open(conninfo, kThreadName));
    auto map = std::make_shared<KeyMap>();
    if (!KeyTableExists(*conn)) return map;
    auto r = conn->Exec(
        "SELECT id, hash, scope, client, coalesce(extract(epoch FROM expires_at), 0)::float8 AS expires "
        "FROM runnel_api_keys WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())");
    const int id = r.ColumnIndex("id"), hash = r.ColumnIndex("hash"), scope = r.ColumnIndex("scope"),
              client = r.ColumnIndex("client"), expires = r.ColumnIndex("expires");
    for (int i = 0; i < r.rows(); ++i) {
      StoredKey key;
      key.access.scope = ParseScope(r.Get<std::string>(i, scope)).value_or(Scope::kRead);
      key.access.client = r.GetOptional<std::string>(i, client);
      key.access.key_id = std::to_string(r.Get<int64_t>(i, id));
      key.expires = r.Get<double>(i, expires);
      (*map)[r.Get<std::string>(i, hash)] = std::move(key);
    }
    return map;
  }

  void Reload() {
    try {
      auto map = Read();
      MutexLock lock(mutex);
      keys = std::move(map);
    } catch (const std::exception& e) {
      conn.reset();
      spdlog::warn("API keys: could not reload them, keeping the {} known: {}", Snapshot()->size(), e.what());
    }
  }

  // Reloads every `refresh` until Stop.
  void Loop() {
    while (true) {
      {
        MutexLock lock(mutex);
        const auto deadline = std::chrono::steady_clock::now() + refresh;
        while (!stopping && lock.WaitUntil(wake, deadline)) {
        }
        if (stopping) return;
      }
      Reload();
    }
  }
};

KeyStore::KeyStore(std::string conninfo, std::chrono::milliseconds refresh) : impl_(std::make_unique<Impl>()) {
  impl_->conninfo = std::move(conninfo);
  impl_->refresh = refresh;
}

KeyStore::~KeyStore() {
  Stop();
}

void KeyStore::Start() {
  auto map = impl_->Read();
  {
    MutexLock lock(impl_->mutex);
    impl_->keys = std::move(map);
  }
  impl_->thread = std::thread([this] {
    NameThisThread(kThreadName);
    impl_->Loop();
  });
}

void KeyStore::Stop() {
  {
    MutexLock lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::optional<Access> KeyStore::Authenticate(std::string_view secret) const {
  if (!secret.starts_with(kSecretPrefix)) return std::nullopt;
  const auto keys = impl_->Snapshot();
  auto it = keys->find(HashKey(secret));
  if (it == keys->end()) return std::nullopt;
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  if (it->second.expires > 0 && now >= it->second.expires) return std::nullopt;
  return it->second.access;
}

bool KeyStore::empty() const {
  return impl_->Snapshot()->empty();
}

}  // namespace runnel::server
