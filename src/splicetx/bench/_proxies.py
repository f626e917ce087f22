"""
The proxies under test: what they are, how to start one as its own process
on 127.0.0.1, and how to stop it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import attr

from splicetx.bench._wire import SNI_NAME

BULK_ONLY = ("bulk",)
ALL_LOADS = ("bulk", "latency", "churn", "idle", "keepalive")


@attr.s(frozen=True, auto_attribs=True)
class ProxySpec:
    """
    One proxy under test.

    @ivar name: short id used in tables, JSON and C{--proxies}.
    @ivar label: what it is, for readers.
    @ivar kind: C{direct}, C{splicetx}, C{portforward}, C{plainloop},
        C{socat} or C{haproxy}.
    @ivar engine: the splicetx engine (C{splicetx} only).
    @ivar pipeSize: pipe size in bytes (splicetx and the plain loop).
    @ivar loads: the load families it runs (C{bulk}, C{latency}, C{churn},
        C{idle}).
    @ivar workers: C{--workers N} for splicetx (CLI launcher only), or
        C{None} for one process.
    @ivar poolSize: for splicetx, a pool of this many C{--connect}
        upstreams (all the one backend, written differently), round robin
        (CLI launcher only: the stand-in has no pools); C{None}: one plain
        upstream.
    @ivar fastPath: for splicetx, C{False} to run it with
        C{--no-fast-path} (the general path, for comparison).
    @ivar logLevel: for splicetx, C{twist --log-level}: C{info} (its
        default: one record per connection) or C{warn} (normal ends are not
        recorded), to price the per-connection record.
    @ivar preamble: what each client sends first (one of
        L{PREAMBLES <splicetx.bench._wire.PREAMBLES>}) and the proxy is set
        up to read: a PROXY header (splicetx C{--accept-proxy-protocol},
        HAProxy C{accept-proxy}) or a TLS ClientHello routed by its server
        name (splicetx C{--route-sni}, HAProxy C{req.ssl_sni}); C{None}.
    @ivar extraArgs: more C{twist splice-proxy} options (the limits per
        client, a bandwidth limit: to price them).
    @ivar pureCore: for splicetx, C{True} to run it with
        C{SPLICETX_NO_EXTENSIONS=1} (the pure-Python core, beside the
        compiled one).
    @ivar reactor: for splicetx, C{twist --reactor NAME}; C{None} for what
        C{twist splice-proxy} picks by default (L{splicetx.reactor}).
    """

    name: str
    label: str
    kind: str
    engine: str | None = None
    pipeSize: int | None = None
    loads: tuple[str, ...] = ALL_LOADS
    workers: int | None = None
    poolSize: int | None = None
    logLevel: str = "info"
    fastPath: bool = True
    preamble: str | None = None
    extraArgs: tuple[str, ...] = ()
    pureCore: bool = False
    reactor: str | None = None


def _kib(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def allSpecs(defaultPipeSize: int) -> list[ProxySpec]:
    """
    Every proxy the bench knows, in table order.  The splice engine at the
    default pipe size runs every load; the other sizes only bulk (the sweep).
    """
    specs = [ProxySpec("direct", "no proxy (the ceiling)", "direct")]
    for size in (64 << 10, 256 << 10, 1 << 20):
        name = f"splice-{size >> 10}k" if size < 1 << 20 else f"splice-{size >> 20}m"
        default = size == defaultPipeSize
        specs.append(
            ProxySpec(
                name,
                f"splicetx, splice engine, {_kib(size)} pipes"
                + (" (default)" if default else ""),
                "splicetx",
                "splice",
                size,
                ALL_LOADS if default else BULK_ONLY,
            )
        )
    specs += [
        ProxySpec("copy", "splicetx, copy engine", "splicetx", "copy", defaultPipeSize),
        ProxySpec(
            defaultSpliceName(defaultPipeSize) + "-w2",
            "splicetx, splice engine, default pipes, --workers 2",
            "splicetx",
            "splice",
            defaultPipeSize,
            ("bulk", "churn"),
            workers=2,
        ),
        ProxySpec(
            defaultSpliceName(defaultPipeSize) + "-pool3",
            "splicetx, splice engine, default pipes, a pool of 3 upstreams",
            "splicetx",
            "splice",
            defaultPipeSize,
            ("bulk", "churn"),
            poolSize=3,
        ),
        ProxySpec(
            defaultSpliceName(defaultPipeSize) + "-nolog",
            "splicetx, splice engine, default pipes, --log-level=warn "
            "(no record of a normal connection: what the record costs)",
            "splicetx",
            "splice",
            defaultPipeSize,
            ("churn", "keepalive"),
            logLevel="warn",
        ),
        ProxySpec(
            defaultSpliceName(defaultPipeSize) + "-pure",
            "splicetx, splice engine, default pipes, SPLICETX_NO_EXTENSIONS=1 "
            "(the pure-Python core, beside the compiled one)",
            "splicetx",
            "splice",
            defaultPipeSize,
            ("bulk", "latency", "churn", "keepalive"),
            pureCore=True,
        ),
        ProxySpec(
            defaultSpliceName(defaultPipeSize) + "-epoll",
            "splicetx, splice engine, default pipes, twist --reactor epoll "
            "(Twisted's own epoll reactor: a log context per wake)",
            "splicetx",
            "splice",
            defaultPipeSize,
            ("latency", "churn", "keepalive"),
            reactor="epoll",
        ),
        ProxySpec(
            defaultSpliceName(defaultPipeSize) + "-general",
            "splicetx, splice engine, default pipes, --no-fast-path (a "
            "Twisted transport and protocol per connection)",
            "splicetx",
            "splice",
            defaultPipeSize,
            ("churn", "keepalive", "idle", "latency"),
            fastPath=False,
        ),
        *_preambleSpecs(defaultPipeSize),
        *_limitSpecs(defaultPipeSize),
        ProxySpec(
            defaultSpliceName(defaultPipeSize) + "-connect",
            "splicetx, splice engine, default pipes, --protocol "
            "examples/http_connect_proxy.ConnectProtocol (each client sends "
            "CONNECT to the backend's IP literal first)",
            "splicetx",
            "splice",
            defaultPipeSize,
            ("churn",),
            preamble="connect",
        ),
        ProxySpec("portforward", "twist portforward (Twisted's own)", "portforward"),
        ProxySpec(
            "plainloop",
            "plain Python epoll + splice loop, 1 MiB pipes (yardstick)",
            "plainloop",
            pipeSize=1 << 20,
        ),
        ProxySpec("socat", "socat (fork per connection)", "socat"),
        ProxySpec("haproxy", "HAProxy, 1 thread, splice forced", "haproxy"),
        *(
            ProxySpec(
                f"haproxy-{short}",
                f"HAProxy, 1 thread, splice forced, {what}",
                "haproxy",
                loads=("churn",),
                preamble=preamble,
            )
            for short, preamble, what in _PREAMBLE_KINDS
        ),
    ]
    return specs


#: The preamble configurations: short name, preamble, what it reads.
_PREAMBLE_KINDS = (
    ("proxy1", "proxy-v1", "a PROXY v1 line from each client (accept-proxy)"),
    ("proxy2", "proxy-v2", "a PROXY v2 header from each client (accept-proxy)"),
    ("sni", "sni", "routing each client by the SNI of its TLS ClientHello"),
)


def _preambleSpecs(defaultPipeSize: int) -> list[ProxySpec]:
    """
    The default splice proxy reading each preamble (churn only), and, for
    the PROXY v1 line and SNI, the same on the general path beside it.
    """
    name = defaultSpliceName(defaultPipeSize)
    specs = []
    for short, preamble, what in _PREAMBLE_KINDS:
        for fast in (True, False):
            if not fast and short == "proxy2":
                continue
            specs.append(
                ProxySpec(
                    f"{name}-{short}" + ("" if fast else "-general"),
                    f"splicetx, splice engine, default pipes, {what}"
                    + ("" if fast else ", --no-fast-path"),
                    "splicetx",
                    "splice",
                    defaultPipeSize,
                    ("churn",),
                    fastPath=fast,
                    preamble=preamble,
                )
            )
    return specs


#: Limits per client that the churn load (one client, 127.0.0.1) never
#: reaches: every connection is admitted, counted and given the client's
#: shared buckets, which is what they cost.
LIMITS_ARGS = (
    "--client-max-connections",
    "100000",
    "--client-connection-rate",
    "1000000/s",
    "--client-bandwidth",
    "64GiB/s",
)

#: The bandwidth limit of the rate-limited bulk stream: well under what
#: the bulk load moves unlimited on loopback, so it binds.
BANDWIDTH_ARGS = ("--connection-bandwidth", "256MiB/s")


def _limitSpecs(defaultPipeSize: int) -> list[ProxySpec]:
    """
    The default splice proxy with limits per client (churn, beside the
    plain one) and with a binding bandwidth limit (bulk: its CPU per GB
    beside the unlimited one's).
    """
    name = defaultSpliceName(defaultPipeSize)
    return [
        ProxySpec(
            f"{name}-limits",
            "splicetx, splice engine, default pipes, limits per client "
            "(connections, rate, shared bandwidth) that are never reached",
            "splicetx",
            "splice",
            defaultPipeSize,
            ("churn", "keepalive"),
            extraArgs=LIMITS_ARGS,
        ),
        ProxySpec(
            f"{name}-bw",
            "splicetx, splice engine, default pipes, --connection-bandwidth "
            "256MiB/s (a binding limit, still spliced)",
            "splicetx",
            "splice",
            defaultPipeSize,
            ("bulk",),
            extraArgs=BANDWIDTH_ARGS,
        ),
    ]


def defaultSpliceName(defaultPipeSize: int) -> str:
    """
    The name of the splice-engine proxy at the default pipe size.
    """
    size = defaultPipeSize
    return f"splice-{size >> 10}k" if size < 1 << 20 else f"splice-{size >> 20}m"


def unavailableReason(spec: ProxySpec) -> str | None:
    """
    Why C{spec} cannot run here, or C{None}.
    """
    if spec.kind in ("socat", "haproxy") and shutil.which(spec.kind) is None:
        return f"{spec.kind} is not installed (apt-get install {spec.kind})"
    if spec.workers and not hasSpliceProxyPlugin():
        return "--workers needs the twist splice-proxy CLI"
    if spec.poolSize and not hasSpliceProxyPlugin():
        return "pools need the twist splice-proxy CLI"
    if spec.preamble == "connect" and not os.path.isdir(EXAMPLES):
        return "the CONNECT example needs a source checkout (examples/)"
    return None


#: The examples of a source checkout (the CONNECT proxy's module).
EXAMPLES = os.path.normpath(
    os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples")
)


def hasSpliceProxyPlugin() -> bool:
    """
    Whether C{twist splice-proxy} exists (the splicetx CLI).
    """
    try:
        from twisted.application.service import IServiceMaker
        from twisted.plugin import getPlugins

        from twisted import plugins

        return any(
            getattr(p, "tapname", None) == "splice-proxy"
            for p in getPlugins(IServiceMaker, plugins)
        )
    except Exception:
        return False


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _twist(*args: str, logLevel: str = "warn", reactor: str | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "twisted",
        *([f"--reactor={reactor}"] if reactor else []),
        f"--log-level={logLevel}",
        "--log-format=text",
        "--log-file=-",
        *args,
    ]


def _connects(spec: ProxySpec, upstream: int) -> list[str]:
    """
    The C{--connect} arguments of a splicetx proxy: one plain upstream, or
    C{poolSize} spellings of it (distinct names in the pool's books: only
    the endpoint's timeout differs); with a preamble, what reads it.
    """
    if spec.preamble == "sni":
        return ["--route-sni", f"{SNI_NAME}=tcp:127.0.0.1:{upstream}"]
    if spec.preamble == "connect":
        # The client names the upstream (see _wire.preambleBytes).
        return ["--protocol", "http_connect_proxy.ConnectProtocol"]
    if spec.preamble is not None:
        return [
            "--connect",
            f"tcp:127.0.0.1:{upstream}",
            "--accept-proxy-protocol",
            "--proxy-protocol-from",
            "127.0.0.0/8",
        ]
    if not spec.poolSize:
        return ["--connect", f"tcp:127.0.0.1:{upstream}"]
    out = []
    for i in range(spec.poolSize):
        out += ["--connect", f"tcp:127.0.0.1:{upstream}:timeout={30 + i}"]
    return out


def needsCLI(spec: ProxySpec) -> bool:
    """
    Whether splicetx C{spec} asks for what only C{twist splice-proxy} takes
    (a pool, C{--no-fast-path}, a log level, a preamble): then it runs the
    CLI whatever the launcher.
    """
    return (
        bool(spec.poolSize)
        or not spec.fastPath
        or spec.logLevel != "info"
        or spec.preamble is not None
        or bool(spec.extraArgs)
        or spec.reactor is not None
    )


def command(
    spec: ProxySpec,
    port: int,
    upstream: int,
    launcher: str,
    workDir: str,
    maxConnections: int | None = None,
) -> list[str]:
    """
    The argv that starts C{spec} listening on C{port}, relaying to
    C{upstream}.  C{launcher} is C{cli} (C{twist splice-proxy}) or
    C{standin} (L{splicetx.bench._standin}) for splicetx.

    @param maxConnections: connections the proxy must be able to hold at
        once (the idle load), or C{None} for its defaults: C{twist
        splice-proxy} gets C{--max-connections}, HAProxy a C{maxconn} of
        that many (and C{maxpipes} to fit the file limit); the stand-in,
        the plain loop, portforward and socat have no such cap.
    """
    if spec.kind == "splicetx":
        assert spec.engine is not None and spec.pipeSize is not None
        if launcher == "cli" or needsCLI(spec):
            return _twist(
                "splice-proxy",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                *_connects(spec, upstream),
                "--engine",
                spec.engine,
                "--pipe-size",
                str(spec.pipeSize),
                *(["--workers", str(spec.workers)] if spec.workers else []),
                *([] if spec.fastPath else ["--no-fast-path"]),
                *spec.extraArgs,
                *(
                    ["--max-connections", str(maxConnections)]
                    if maxConnections is not None
                    else []
                ),
                # At its defaults: one access-log record per connection.
                logLevel=spec.logLevel,
                reactor=spec.reactor,
            )
        return [
            sys.executable,
            "-m",
            "splicetx.bench._standin",
            "--listen",
            str(port),
            "--connect",
            str(upstream),
            "--engine",
            spec.engine,
            "--pipe-size",
            str(spec.pipeSize),
        ]
    if spec.kind == "portforward":
        return _twist(
            "portforward",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--host",
            "127.0.0.1",
            "--dest_port",
            str(upstream),
            reactor="epoll",
        )
    if spec.kind == "plainloop":
        return [
            sys.executable,
            "-m",
            "splicetx.bench._plainloop",
            "--listen",
            str(port),
            "--connect",
            str(upstream),
            "--pipe-size",
            str(spec.pipeSize or 1 << 20),
        ]
    if spec.kind == "socat":
        return [
            "socat",
            f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,backlog=4096",
            f"TCP:127.0.0.1:{upstream}",
        ]
    if spec.kind == "haproxy":
        import resource

        # haproxy needs about 2.5 fds per connection with splicing (sockets
        # and pipes) and refuses to start when maxconn does not fit.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = soft if hard == resource.RLIM_INFINITY else max(soft, hard)
        maxconn = max(256, min(20000, (limit - 256) // 3))
        pipes = ""
        if maxConnections is not None:
            # Two sockets per connection; what is left makes pipes (two
            # fds each), which only connections with bytes in flight hold.
            maxconn = maxConnections
            pipes = f"    maxpipes {max(16, (limit - 256 - 2 * maxconn) // 2)}\n"
        bind, route = f"    bind 127.0.0.1:{port}\n", "    default_backend upstream\n"
        if spec.preamble in ("proxy-v1", "proxy-v2"):
            bind = f"    bind 127.0.0.1:{port} accept-proxy\n"
        elif spec.preamble == "sni":
            route = (
                "    tcp-request inspect-delay 5s\n"
                "    tcp-request content accept if { req.ssl_hello_type 1 }\n"
                f"    use_backend upstream if {{ req.ssl_sni -i {SNI_NAME} }}\n"
            )
        cfg = os.path.join(workDir, f"haproxy-{port}.cfg")
        with open(cfg, "w") as f:
            f.write(
                "global\n"
                "    nbthread 1\n"
                f"    maxconn {maxconn}\n"
                f"{pipes}"
                "defaults\n"
                "    mode tcp\n"
                "    timeout connect 10s\n"
                "    timeout client 300s\n"
                "    timeout server 300s\n"
                "    option splice-request\n"
                "    option splice-response\n"
                "frontend bench\n"
                f"{bind}"
                f"{route}"
                "backend upstream\n"
                f"    server s1 127.0.0.1:{upstream}\n"
            )
        return ["haproxy", "-db", "-f", cfg]
    raise ValueError(f"no command for {spec.kind}")


@attr.s(auto_attribs=True)
class RunningProxy:
    """
    A started proxy (or the direct path, which has no process).
    """

    spec: ProxySpec
    port: int
    process: subprocess.Popen | None = None
    argv: list[str] = attr.Factory(list)
    launcher: str | None = None
    logPath: str | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def stop(self) -> None:
        """
        Stop the proxy and anything it forked.
        """
        p = self.process
        if p is None or p.poll() is not None:
            return
        try:
            import psutil

            kids = psutil.Process(p.pid).children(recursive=True)
        except Exception:
            kids = []
        p.send_signal(signal.SIGTERM)
        for k in kids:
            try:
                k.terminate()
            except Exception:
                pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        for k in kids:
            try:
                k.kill()
            except Exception:
                pass


def logTail(path: str | None, lines: int = 8) -> str:
    """
    The last lines of a log file, for error messages.
    """
    if not path:
        return ""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).strip()
    except OSError:
        return ""


def waitListening(proxy: RunningProxy, timeout: float = 30.0) -> str | None:
    """
    Wait until the proxy accepts connections.

    @return: C{None}, or why it did not come up.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proxy.alive():
            assert proxy.process is not None
            return (
                f"exited with status {proxy.process.returncode}: "
                f"{logTail(proxy.logPath)}"
            )
        try:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=1):
                return None
        except OSError:
            time.sleep(0.05)
    return f"not listening after {timeout:.0f}s: {logTail(proxy.logPath)}"


def start(
    spec: ProxySpec,
    upstream: int,
    launcher: str,
    workDir: str,
    maxConnections: int | None = None,
) -> RunningProxy:
    """
    Start C{spec} in front of C{upstream}; do not wait for it (see
    L{waitListening}).

    @param maxConnections: see L{command}.
    """
    if spec.kind == "direct":
        return RunningProxy(spec, upstream)
    port = freePort()
    argv = command(spec, port, upstream, launcher, workDir, maxConnections)
    logPath = os.path.join(workDir, f"{spec.name}-{port}.log")
    log = open(logPath, "wb")
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if spec.preamble == "connect":
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (EXAMPLES, env.get("PYTHONPATH")) if p
        )
    if spec.pureCore:
        env["SPLICETX_NO_EXTENSIONS"] = "1"
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    log.close()
    if spec.kind == "splicetx" and needsCLI(spec):
        launcher = "cli"
    return RunningProxy(
        spec,
        port,
        process,
        argv,
        launcher if spec.kind == "splicetx" else None,
        logPath,
    )


def describe(proxy: RunningProxy) -> dict[str, Any]:
    """
    JSON-ready description of a running proxy.
    """
    return {
        "label": proxy.spec.label,
        "kind": proxy.spec.kind,
        "engine": proxy.spec.engine,
        "pipeSize": proxy.spec.pipeSize,
        "workers": proxy.spec.workers,
        "preamble": proxy.spec.preamble,
        "extraArgs": list(proxy.spec.extraArgs),
        "launcher": proxy.launcher,
        "argv": proxy.argv,
    }
