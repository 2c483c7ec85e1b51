"""How to trust a target and how to prove who we are: the same four keys on every kind."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tls:
    verify: bool = True                # check the certificate chain and the host name
    ca_file: str | None = None         # PEM bundle to trust instead of the system store
    client_cert: str | None = None     # PEM certificate for targets that require mutual TLS
    client_key: str | None = None      # its private key (default: inside client_cert)


NO_TLS = Tls()
