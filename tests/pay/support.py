"""Shared pieces of the payment tests: real RSA keys made at test time, a started sandbox gateway, profiles."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from alirecon.clock import UTC8
from alirecon.config import PayProfile
from alirecon.pay.client import PayClient
from alirecon.sandbox.clock import SimClock
from alirecon.sandbox.pay_gateway import PayGateway

CLIENT_ID = "2188400000000001"
MERCHANT_ID = "2188120000000001"
OTHER_MERCHANT_ID = "2188120000000002"
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC8)


@dataclass(frozen=True)
class PayKeys:
    client: rsa.RSAPrivateKey
    alipay: rsa.RSAPrivateKey
    other: rsa.RSAPrivateKey


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def key_lines(key: rsa.RSAPrivateKey) -> list[str]:
    """The private key's Base64 lines and one-line form: none may appear in any text we produce."""
    lines = [ln for ln in private_pem(key).decode().splitlines() if ln and not ln.startswith("-----")]
    return [*lines, "".join(lines)]


@pytest.fixture(scope="session")
def pay_keys() -> PayKeys:
    return PayKeys(*(rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)))


@dataclass
class Sandbox:
    gateway: PayGateway
    clock: SimClock
    keys: PayKeys
    key_file: Path

    def profile(self, **overrides: Any) -> PayProfile:
        values: dict[str, Any] = dict(environment="sandbox", endpoint=self.gateway.endpoint, client_id=CLIENT_ID,
                                      merchant_id=MERCHANT_ID, private_key_file=self.key_file,
                                      alipay_public_key=self.gateway.alipay_public_key_pem, timeout=5.0)
        values.update(overrides)
        return PayProfile(**values)

    def client(self, **overrides: Any) -> PayClient:
        return PayClient(self.profile(**overrides), now=self.clock.now)


@pytest.fixture
def sandbox(pay_keys: PayKeys, tmp_path: Path) -> Iterator[Sandbox]:
    key_file = tmp_path / "client-key.pem"
    key_file.write_bytes(private_pem(pay_keys.client))
    clock = SimClock(NOW)
    gateway = PayGateway(clock, alipay_key=pay_keys.alipay)
    gateway.register_client(CLIENT_ID, pay_keys.client.public_key(), [MERCHANT_ID, OTHER_MERCHANT_ID])
    with gateway:
        yield Sandbox(gateway, clock, pay_keys, key_file)
