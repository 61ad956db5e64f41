#!/usr/bin/env python3
"""Makes NATS decentralized-auth fixtures in DIR, as `nsc` would (Debian has no nsc):
an operator, its system account, an account with JetStream enabled and a user of it, signed with Ed25519
keys in NATS's nkey encoding, and JWTs (v2 claims):

  DIR/server.conf   operator and MEMORY resolver lines for nats-server -c
  DIR/user.creds    the user's JWT and seed, as a client's credentials file
  DIR/stranger.creds a user of another account the server does not know

Usage: nats_credentials.py DIR
"""
import base64
import json
import os
import sys
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PREFIX_SEED = 18 << 3
PREFIX = {"operator": 14 << 3, "account": 0, "user": 20 << 3}


def crc16(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def b32(raw):
    return base64.b32encode(raw + crc16(raw).to_bytes(2, "little")).decode().rstrip("=")


class Key:
    def __init__(self, kind):
        self.kind = kind
        self.private = Ed25519PrivateKey.generate()

    def public(self):
        raw = self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return b32(bytes([PREFIX[self.kind]]) + raw)

    def seed(self):
        raw = self.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
        prefix = PREFIX[self.kind]
        return b32(bytes([PREFIX_SEED | (prefix >> 5), (prefix & 31) << 3]) + raw)


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(issuer, subject, name, nats):
    header = {"typ": "JWT", "alg": "ed25519-nkey"}
    claims = {"jti": b64url(os.urandom(16)), "iat": int(time.time()), "iss": issuer.public(),
              "name": name, "sub": subject.public(), "nats": nats}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return signing_input + "." + b64url(issuer.private.sign(signing_input.encode()))


UNLIMITED = {"subs": -1, "data": -1, "payload": -1}


def account(operator, key, name):
    limits = dict(UNLIMITED, imports=-1, exports=-1, wildcards=True, conn=-1, leaf=-1,
                  mem_storage=-1, disk_storage=-1, streams=-1, consumer=-1)
    return jwt(operator, key, name, {"limits": limits, "type": "account", "version": 2})


def creds(account_key, name):
    user = Key("user")
    token = jwt(account_key, user, name, dict(UNLIMITED, pub={}, sub={}, type="user", version=2))
    return (f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user.seed()}\n------END USER NKEY SEED------\n")


def main(directory):
    operator, known, stranger, system = Key("operator"), Key("account"), Key("account"), Key("account")
    operator_jwt = jwt(operator, operator, "runnel-test", {"type": "operator", "version": 2})
    with open(os.path.join(directory, "operator.jwt"), "w") as f:
        f.write(operator_jwt)
    with open(os.path.join(directory, "server.conf"), "w") as f:
        # JetStream needs a system account for its internal subscriptions.
        f.write(f'operator: "{os.path.join(directory, "operator.jwt")}"\nsystem_account: {system.public()}\n'
                f'resolver: MEMORY\nresolver_preload: {{\n  {known.public()}: "{account(operator, known, "runnel")}"\n'
                f'  {system.public()}: "{jwt(operator, system, "SYS", {"type": "account", "version": 2})}"\n}}\n')
    for name, key in (("user", known), ("stranger", stranger)):
        with open(os.path.join(directory, f"{name}.creds"), "w") as f:
            f.write(creds(key, name))


if __name__ == "__main__":
    main(sys.argv[1])
