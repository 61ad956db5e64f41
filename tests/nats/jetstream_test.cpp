// The JetStream wrapper (include/runnel/nats/jetstream.hpp) against a real nats-server
// started on loopback: a durable pull consumer shared by two consumers (each message
// to one), redelivery of what is not acknowledged, duplicate message ids, a server
// killed and started again.
#include "runnel/nats/jetstream.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "../support/error_message.hpp"
#include "../support/nats_server.hpp"
#include "../support/shared_paths.hpp"
#include "../support/temp_dir.hpp"
#include "runnel/core/error.hpp"

namespace runnel::nats {
namespace {

using std::chrono::milliseconds;

class JetStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RUNNEL_REQUIRE_NATS_SERVER();
    server_ = std::make_unique<testing::NatsServer>();
  }
  ConnectOptions Options() const {
    ConnectOptions options;
    options.servers = {server_->url()};
    options.name = "runnel-test";
    return options;
  }
  std::unique_ptr<testing::NatsServer> server_;
};

TEST_F(JetStreamTest, AConsumerSharedByTwoGivesEachMessageOnce) {
  JetStream js(Options());
  js.EnsureStream("REQ", {"req.>"});
  js.EnsureStream("REQ", {"req.>"});  // exists: nothing happens
  for (int i = 0; i < 100; ++i) EXPECT_EQ(js.Publish("req.a", fmt::format("{{\"i\": {}}}", i)), uint64_t(i + 1));
  auto first = js.Consume("REQ", "workers", "req.>", milliseconds(30'000));
  auto second = js.Consume("REQ", "workers", "req.>", milliseconds(30'000));
  std::set<uint64_t> seen;
  for (int round = 0; round < 20 && seen.size() < 100; ++round) {
    for (auto* consumer : {first.get(), second.get()}) {
      for (auto& m : consumer->Fetch(7, milliseconds(200))) {
        EXPECT_TRUE(seen.insert(m.stream_sequence()).second) << "sequence " << m.stream_sequence() << " twice";
        EXPECT_EQ(m.subject(), "req.a");
        EXPECT_EQ(m.deliveries(), 1u);
        EXPECT_EQ(m.data(), fmt::format("{{\"i\": {}}}", m.stream_sequence() - 1));
        m.Ack();
      }
    }
  }
  EXPECT_EQ(seen.size(), 100u);
  EXPECT_TRUE(first->Fetch(10, milliseconds(100)).empty());
  const ConsumerInfo info = js.Info("REQ", "workers");
  EXPECT_EQ(info.pending, 0u);
}

TEST_F(JetStreamTest, WhatIsNotAcknowledgedComesAgain) {
  JetStream js(Options());
  js.EnsureStream("REQ", {"req.>"});
  js.Publish("req.a", "one");
  auto consumer = js.Consume("REQ", "workers", "req.>", milliseconds(500));
  {
    auto got = consumer->Fetch(10, milliseconds(500));
    ASSERT_EQ(got.size(), 1u);
    // Dropped without an acknowledgement, as a process that died would.
  }
  std::this_thread::sleep_for(milliseconds(700));
  auto again = consumer->Fetch(10, milliseconds(2000));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].data(), "one");
  EXPECT_EQ(again[0].deliveries(), 2u);
  again[0].Nak();  // back at once
  auto third = consumer->Fetch(10, milliseconds(2000));
  ASSERT_EQ(third.size(), 1u);
  EXPECT_EQ(third[0].deliveries(), 3u);
  third[0].Term();
  EXPECT_TRUE(consumer->Fetch(10, milliseconds(800)).empty()) << "terminated: never again";
}

// A batch of large messages is cut at the byte bound: memory per fetch stays bounded
// whatever the batch size.
TEST_F(JetStreamTest, AFetchHoldsAtMostItsBytes) {
  JetStream js(Options());
  js.EnsureStream("BIG", {"big.>"});
  const std::string payload(100'000, 'x');
  for (int i = 0; i < 10; ++i) js.Publish("big.a", payload);
  auto consumer = js.Consume("BIG", "workers", "big.>", milliseconds(30'000));
  size_t total = 0, fetches = 0;
  for (int round = 0; round < 20 && total < 10; ++round) {
    auto got = consumer->Fetch(10, milliseconds(500), 250'000);
    EXPECT_LE(got.size(), 2u) << "250 kB hold two 100 kB messages";
    for (auto& m : got) {
      EXPECT_EQ(m.data().size(), payload.size());
      m.Ack();
    }
    total += got.size();
    fetches += got.empty() ? 0 : 1;
  }
  EXPECT_EQ(total, 10u);
  EXPECT_GE(fetches, 5u);
}

TEST_F(JetStreamTest, AMessageIdIsStoredOnce) {
  JetStream js(Options());
  js.EnsureStream("RES", {"res.>"});
  const uint64_t a = js.Publish("res.c1", "x", "needs/7");
  EXPECT_EQ(js.Publish("res.c1", "x", "needs/7"), a) << "the duplicate window keeps the first";
  EXPECT_EQ(js.Publish("res.c1", "y", "needs/8"), a + 1);
}

// PublishAll returns once the stream stored every message; ids it saw are dropped;
// a subject no stream captures is named, with NotFound.
TEST_F(JetStreamTest, PublishAllWaitsForTheStreamAndDropsKnownIds) {
  JetStream js(Options());
  js.EnsureStream("RES", {"res.>"});
  std::vector<OutgoingMessage> batch;
  for (int i = 0; i < 2500; ++i)
    batch.push_back({fmt::format("res.c{}", i % 3), std::to_string(i), {{"Nats-Msg-Id", fmt::format("id-{}", i)}}});
  js.PublishAll(batch);
  auto consumer = js.Consume("RES", "check", "res.>", milliseconds(30'000));
  std::vector<std::string> got;
  for (int round = 0; round < 20 && got.size() < 2500; ++round)
    for (auto& m : consumer->Fetch(1000, milliseconds(300))) got.emplace_back(m.data());
  ASSERT_EQ(got.size(), 2500u) << "every message stored when PublishAll returned";
  EXPECT_EQ(got.front(), "0");
  EXPECT_EQ(got.back(), "2499");
  // Again with the same ids (a publisher that took over): nothing new is stored.
  js.PublishAll(std::span<const OutgoingMessage>(batch).first(1000));
  js.PublishAll(std::vector<OutgoingMessage>{{"res.c9", "new", {{"Nats-Msg-Id", "id-new"}}}});
  const auto more = consumer->Fetch(1000, milliseconds(300));
  ASSERT_EQ(more.size(), 1u);
  EXPECT_EQ(more[0].data(), "new");
  EXPECT_EQ(more[0].Header("Nats-Msg-Id"), "id-new");
  try {
    js.PublishAll(std::vector<OutgoingMessage>{{"nowhere.x", "lost", {}}});
    FAIL() << "published to no stream";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
    EXPECT_NE(std::string(e.what()).find("no stream captures 'nowhere.x'"), std::string::npos) << e.what();
  }
  js.PublishAll(std::vector<OutgoingMessage>{{"res.after", "fine", {}}});  // the failure is not carried over
  EXPECT_EQ(js.StreamFor("res.c1"), "RES");
  EXPECT_EQ(js.StreamFor("nowhere.x"), std::nullopt);
}

TEST_F(JetStreamTest, MessagesSurviveTheServerRestartingAndTheClientReconnects) {
  JetStream js(Options());
  js.EnsureStream("REQ", {"req.>"});
  for (int i = 0; i < 10; ++i) js.Publish("req.a", std::to_string(i));
  auto consumer = js.Consume("REQ", "workers", "req.>", milliseconds(30'000));
  server_->Kill();
  try {
    EXPECT_TRUE(consumer->Fetch(5, milliseconds(300)).empty());  // nothing while it is down
  } catch (const Error&) {
  }
  server_->Start();
  size_t got = 0;
  for (int attempt = 0; attempt < 50 && got < 10; ++attempt) {
    try {
      for (auto& m : consumer->Fetch(10, milliseconds(200))) {
        m.Ack();
        ++got;
      }
    } catch (const Error&) {
      std::this_thread::sleep_for(milliseconds(100));  // reconnecting
    }
  }
  EXPECT_EQ(got, 10u);
}

TEST(JetStreamErrors, AnUnreachableServerIsNamed) {
  const std::string message = testing::MessageOf([] {
    ConnectOptions options;
    options.servers = {"nats://127.0.0.1:1"};
    options.timeout = milliseconds(300);
    JetStream js(options);
  });
  EXPECT_NE(message.find("connecting to nats://127.0.0.1:1"), std::string::npos) << message;
  EXPECT_NE(testing::MessageOf([] { JetStream js(ConnectOptions{}); }).find("no server URL"), std::string::npos);
}

// A client connecting with `options` makes stream `stream` on `<prefix>.>`, publishes
// one message and fetches it back.
void ExpectServed(const ConnectOptions& options, const std::string& stream, const std::string& prefix) {
  JetStream js(options);
  js.EnsureStream(stream, {prefix + ".>"});
  const std::string body = "{\"stream\": \"" + stream + "\"}";
  EXPECT_EQ(js.Publish(prefix + ".a", body), 1u);
  auto consumer = js.Consume(stream, prefix, prefix + ".>", milliseconds(30'000));
  auto got = consumer->Fetch(10, milliseconds(2000));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data(), body);
  got[0].Ack();
}

// The error of a client connecting with `options` (within 1 s), "" when it connects.
std::string Refusal(ConnectOptions options) {
  options.timeout = milliseconds(1000);
  return testing::MessageOf([&] { JetStream js(options); });
}

// TLS as a pipeline's [jetstream] ca_file, cert_file and key_file pass it: a server
// that speaks only TLS and wants a client certificate its CA signed. The client given
// the CA and its certificate publishes and fetches; one without its certificate, one
// that does not trust the server's CA and one without TLS are refused, naming the
// server they were connecting to.
TEST(JetStreamTls, ACertifiedClientIsServedAndOthersAreRefused) {
  RUNNEL_REQUIRE_NATS_SERVER();
  testing::TempDir dir("runnel-tls"), other_dir("runnel-tls-other");
  const testing::TestCertificates certs(dir.path()), other(other_dir.path());
  testing::NatsServer server(testing::NatsServer::Tls{certs.server_cert, certs.server_key, certs.ca});
  ConnectOptions options;
  options.servers = {server.url()};
  options.ca_file = certs.ca.string();
  options.cert_file = certs.client_cert.string();
  options.key_file = certs.client_key.string();
  ExpectServed(options, "TLS", "tls");
  ConnectOptions no_certificate = options;
  no_certificate.cert_file.clear();
  no_certificate.key_file.clear();
  ConnectOptions other_authority = options;
  other_authority.ca_file = other.ca.string();
  other_authority.cert_file = other.client_cert.string();
  other_authority.key_file = other.client_key.string();
  ConnectOptions plain;
  plain.servers = options.servers;
  for (const auto& o : {no_certificate, other_authority, plain}) {
    const std::string message = Refusal(o);
    EXPECT_NE(message.find("connecting to " + server.url()), std::string::npos)
        << "ca " << o.ca_file << " cert " << o.cert_file << ": " << message;
  }
}

// A server in decentralized-auth mode (an operator's JWTs, as `nsc` makes them): a
// client with its account's user credentials file publishes and fetches; one without
// credentials, or with a user of an account the server does not know, is refused at
// start naming the server.
TEST(JetStreamCredentials, AUserWithItsCredentialsIsServedAndOthersAreRefused) {
  RUNNEL_REQUIRE_NATS_SERVER();
  testing::TempDir dir("runnel-creds");
  const testing::TestCredentials credentials(dir.path());
  testing::NatsServer server(testing::NatsServer::Operator{credentials.server_config});
  ConnectOptions options;
  options.servers = {server.url()};
  options.credentials_file = credentials.user_creds.string();
  ExpectServed(options, "CREDS", "creds");
  ConnectOptions stranger = options;
  stranger.credentials_file = credentials.stranger_creds.string();
  ConnectOptions none;
  none.servers = options.servers;
  for (const auto& o : {stranger, none}) {
    const std::string message = Refusal(o);
    EXPECT_NE(message.find("connecting to " + server.url()), std::string::npos)
        << "credentials '" << o.credentials_file << "': " << message;
    EXPECT_NE(message.find("Authorization Violation"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace runnel::nats
