"""The resolver the webhook client connects through refuses private addresses itself, so a
name cannot resolve to a public address for a check and a private one for the connection."""

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from leanon_notification.webhooks import GuardedResolver, PrivateTarget


class Answers(AbstractResolver):
    """A DNS server that answers each name from a script, as a rebinding attacker would."""

    def __init__(self, **names: list[str]) -> None:
        self.names = names

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {"hostname": host, "host": ip, "port": port, "family": family, "proto": 0, "flags": 0}
            for ip in self.names[host.replace(".", "_")]
        ]

    async def close(self) -> None:
        return None


async def test_public_names_resolve_and_private_ones_are_refused() -> None:
    dns = Answers(
        hooks_example_org=["93.184.216.34"],
        rebind_example_org=["93.184.216.34", "10.0.0.7"],
        meta_example_org=["169.254.169.254"],
        v6_example_org=["::1"],
        dev_local=["127.0.0.1"],
    )
    guard = GuardedResolver(frozenset({"dev.local"}), dns)
    assert [r["host"] for r in await guard.resolve("hooks.example.org", 443)] == ["93.184.216.34"]
    for name in ("rebind.example.org", "meta.example.org", "v6.example.org"):
        with pytest.raises(PrivateTarget):
            await guard.resolve(name, 443)
    assert await guard.resolve("dev.local", 80)  # allowed by LEANON_WEBHOOK_ALLOW_HOSTS
