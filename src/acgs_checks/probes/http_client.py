"""The HTTP connection layer under every exchange: TLS contexts (the trust store or ``ca_file``, a client
certificate), proxies from the environment, httpx's transport over the suite's network backend (whose DNS and
connects are bounded), and keep-alive pools for synthetic sampling."""

from __future__ import annotations

import contextvars
import functools
import ssl
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit

import httpcore
import httpx

from acgs_checks import __version__
from acgs_checks.environment import Tls
from acgs_checks.probes import network

_ACCEPT = "application/health+json, application/json;q=0.9, */*;q=0.1"


@functools.lru_cache(maxsize=64)
def ssl_context(tls: Tls) -> ssl.SSLContext:
    """The system trust store (or ``ca_file``), hostname checks, and a client certificate if given.

    One per TLS setting per run: loading the trust store costs about 15 ms of event-loop time,
    which for a few hundred targets probed at once would eat their time bound.
    """
    context = ssl.create_default_context(cafile=tls.ca_file)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.client_cert:
        context.load_cert_chain(tls.client_cert, tls.client_key)
    return context


# The proxy variables as read in the main thread, for a pass running in another one: pytest sets and
# removes PYTEST_CURRENT_TEST meanwhile, and reading os.environ then can raise KeyError.
PROXIES: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("acgs_proxies", default=None)


def proxy_for(scheme: str, host: str) -> str:
    """The proxy the environment names for this URL (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), or ''."""
    proxies = PROXIES.get()
    if proxies is None:
        proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme, "")
    bypass = urllib.request.proxy_bypass_environment(host, proxies)  # type: ignore[attr-defined]  # CPython has it
    return "" if not proxy or bypass else proxy


def transport(tls: Tls, proxy: str, backend: network.Backend, connections: int) -> httpx.AsyncHTTPTransport:
    """httpx's transport over our network backend (httpx takes no backend itself: its pool is replaced)."""
    context = ssl_context(tls)
    transport = httpx.AsyncHTTPTransport(verify=context, trust_env=False)
    pool: httpcore.AsyncConnectionPool
    if proxy:
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        auth = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username else None
        bare = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
        pool = httpcore.AsyncHTTPProxy(proxy_url=bare, proxy_auth=auth, ssl_context=context, network_backend=backend,
                                       max_connections=connections)
    else:
        pool = httpcore.AsyncConnectionPool(ssl_context=context, network_backend=backend, max_connections=connections)
    transport._pool = pool
    return transport


class Pool:
    """Keep-alive connections for repeated requests to one service (synthetic sampling).

    At most one connection per request in flight, reused while the server keeps it open; an idle
    connection the server closed meanwhile is replaced within the request's bound.
    :meth:`aclose` closes them all.
    """

    def __init__(self, connections: int = 64) -> None:
        self.backend = network.Backend()
        self._connections = connections
        self._clients: dict[tuple[Tls, str], httpx.AsyncClient] = {}

    @property
    def opened(self) -> int:
        """Connections made for requests that used this pool."""
        return self.backend.opened

    def client(self, tls: Tls, proxy: str) -> httpx.AsyncClient:
        key = (tls, proxy)
        if key not in self._clients:
            self._clients[key] = client(transport(tls, proxy, self.backend, self._connections))
        return self._clients[key]

    def idle(self) -> int:
        """How many connections wait to be reused."""
        count = 0
        for client in self._clients.values():
            pool = client._transport._pool  # type: ignore[attr-defined]
            count += sum(1 for connection in pool.connections if connection.is_idle())
        return count

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def client(transport: httpx.AsyncHTTPTransport) -> httpx.AsyncClient:
    # No timeouts of httpx's own: the exchange has one total bound. No redirects: a health URL
    # that redirects is reported as the 3xx it is.
    return httpx.AsyncClient(transport=transport, timeout=None,  # noqa: S113 - asyncio.timeout bounds it
                             follow_redirects=False, trust_env=False,
                             headers={"User-Agent": f"acgs-checks/{__version__}", "Accept": _ACCEPT,
                                      "Accept-Encoding": "gzip, deflate"})
