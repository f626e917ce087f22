# -*- test-case-name: tests.test_cli_errors -*-
"""
Bad input to C{twist splice-proxy}: one clear line on standard error, a
non-zero exit status, never a traceback.  Table-driven: every row runs the
real command as a subprocess (all rows at once, the first time a test asks).
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import tempfile
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ._cli_support import LOOPBACK, twistCommand

OK_CONNECT = ["--connect", f"tcp:{LOOPBACK}:9"]
OK_LISTEN = ["--listen", f"tcp:0:interface={LOOPBACK}"]
USAGE = 64
START = 1

#: (name, arguments, exit status, text expected in the one stderr line).
#: {busy} is a loopback port already in use, {garbage} a file that is not a
#: key, {tmp} a scratch directory.
BAD_INPUTS: list[tuple[str, list[str], int, str]] = [
    ("nothing", [], USAGE, "nothing to serve: give --listen ENDPOINT"),
    (
        "clientRate",
        [*OK_LISTEN, *OK_CONNECT, "--client-connection-rate", "fast"],
        USAGE,
        "--client-connection-rate: expected a rate like 5/s",
    ),
    (
        "clientMaxConnections",
        [*OK_LISTEN, *OK_CONNECT, "--client-max-connections", "many"],
        USAGE,
        "--client-max-connections: expected a whole number",
    ),
    (
        "clientPrefix",
        [*OK_LISTEN, *OK_CONNECT, "--client-prefix", "33,128"],
        USAGE,
        "--client-prefix: expected IPv4,IPv6 prefix lengths",
    ),
    (
        "metricsAllowBadRule",
        [
            *OK_LISTEN,
            *OK_CONNECT,
            "--metrics",
            "tcp:0:interface=127.0.0.1",
            "--metrics-allow",
            "10.0.0.0/99",
        ],
        USAGE,
        "--metrics-allow: bad address rule '10.0.0.0/99'",
    ),
    ("noConnect", OK_LISTEN, USAGE, "--connect is required"),
    ("noListen", OK_CONNECT, USAGE, "--listen is required"),
    (
        "unknownListenType",
        ["--listen", "bogus:1", *OK_CONNECT],
        USAGE,
        "Unknown endpoint type: 'bogus'",
    ),
    (
        "bareListenPort",
        ["--listen", "8080", *OK_CONNECT],
        USAGE,
        "did you mean tcp:8080?",
    ),
    (
        "listenPortNotANumber",
        ["--listen", "tcp:http", *OK_CONNECT],
        USAGE,
        "expected a number, got 'http'",
    ),
    (
        "connectWithoutPort",
        [*OK_LISTEN, "--connect", f"tcp:{LOOPBACK}"],
        USAGE,
        "--connect tcp:127.0.0.1: missing the port (e.g. tcp:127.0.0.1:8080)",
    ),
    (
        "connectPortNotANumber",
        [*OK_LISTEN, "--connect", f"tcp:{LOOPBACK}:abc"],
        USAGE,
        "expected a number, got 'abc'",
    ),
    (
        "connectPortOutOfRange",
        [*OK_LISTEN, "--connect", f"tcp:{LOOPBACK}:70000"],
        USAGE,
        "port 70000 out of range",
    ),
    (
        "unknownConnectType",
        [*OK_LISTEN, "--connect", "carrier-pigeon:coop"],
        USAGE,
        "Unknown endpoint type: 'carrier-pigeon'",
    ),
    (
        "tcp6ConnectWithoutPort",
        [*OK_LISTEN, "--connect", "tcp6:[::1]"],
        USAGE,
        "tcp6 needs a host and a port",
    ),
    (
        "unknownEngine",
        [*OK_LISTEN, *OK_CONNECT, "--engine", "turbo"],
        USAGE,
        "--engine: unknown engine 'turbo'",
    ),
    (
        "pipeSizeNotANumber",
        [*OK_LISTEN, *OK_CONNECT, "--pipe-size", "big"],
        USAGE,
        "--pipe-size: expected a size in bytes",
    ),
    (
        "pipeSizeNegative",
        [*OK_LISTEN, *OK_CONNECT, "--pipe-size", "-1"],
        USAGE,
        "--pipe-size: must be positive",
    ),
    (
        "maxPipesNegative",
        [*OK_LISTEN, *OK_CONNECT, "--max-pipes", "-5"],
        USAGE,
        "--max-pipes: must be at least 0",
    ),
    (
        "connectTimeoutNotANumber",
        [*OK_LISTEN, *OK_CONNECT, "--connect-timeout", "soon"],
        USAGE,
        "--connect-timeout: expected a number of seconds",
    ),
    (
        "connectTimeoutZero",
        [*OK_LISTEN, *OK_CONNECT, "--connect-timeout", "0"],
        USAGE,
        "--connect-timeout: must be positive",
    ),
    (
        "connectEmptyUnixPath",
        [*OK_LISTEN, "--connect", "unix:"],
        USAGE,
        "--connect 'unix:': a unix endpoint needs a path",
    ),
    (
        "listenEmptyUnixPath",
        ["--listen", "unix:address=", *OK_CONNECT],
        USAGE,
        "--listen 'unix:address=': a unix endpoint needs a path",
    ),
    (
        "resolveTTLTooLong",
        [*OK_LISTEN, *OK_CONNECT, "--resolve-ttl", "2h"],
        USAGE,
        "--resolve-ttl: at most 3600 seconds (1h), got '2h'",
    ),
    (
        "resolveTTLNotANumber",
        [*OK_LISTEN, *OK_CONNECT, "--resolve-ttl", "soon"],
        USAGE,
        "--resolve-ttl: expected a number of seconds",
    ),
    (
        "halfCloseTimeoutNegative",
        [*OK_LISTEN, *OK_CONNECT, "--half-close-timeout", "-1"],
        USAGE,
        "--half-close-timeout: must be zero or more",
    ),
    (
        "tcpKeepaliveNotNumbers",
        [*OK_LISTEN, *OK_CONNECT, "--tcp-keepalive", "60:ten"],
        USAGE,
        "--tcp-keepalive: expected IDLE[:INTERVAL[:COUNT]]",
    ),
    (
        "tcpKeepaliveOutOfRange",
        [*OK_LISTEN, *OK_CONNECT, "--tcp-keepalive", "60:10:1000"],
        USAGE,
        "count 1 to 127",
    ),
    (
        "proxyProtocolFromWithoutAccept",
        [*OK_LISTEN, *OK_CONNECT, "--proxy-protocol-from", "10.0.0.0/8"],
        USAGE,
        "--proxy-protocol-from needs --accept-proxy-protocol",
    ),
    (
        "proxyProtocolFromBadNetwork",
        [
            *OK_LISTEN,
            *OK_CONNECT,
            "--accept-proxy-protocol",
            "--proxy-protocol-from",
            "10.0.0.0/33",
        ],
        USAGE,
        "--proxy-protocol-from: bad address rule '10.0.0.0/33'",
    ),
    (
        "idleTimeoutNegative",
        [*OK_LISTEN, *OK_CONNECT, "--idle-timeout", "-2"],
        USAGE,
        "--idle-timeout: must be zero or more",
    ),
    (
        "drainTimeoutNaN",
        [*OK_LISTEN, *OK_CONNECT, "--drain-timeout", "nan"],
        USAGE,
        "--drain-timeout: must be a finite number",
    ),
    (
        "maxConnectionsNegative",
        [*OK_LISTEN, *OK_CONNECT, "--max-connections", "-1"],
        USAGE,
        "--max-connections: must be at least 0",
    ),
    (
        "backlogZero",
        [*OK_LISTEN, *OK_CONNECT, "--backlog", "0"],
        USAGE,
        "--backlog: must be at least 1",
    ),
    (
        "unknownOption",
        [*OK_LISTEN, *OK_CONNECT, "--turbo"],
        USAGE,
        "option --turbo not recognized",
    ),
    (
        "strayArgument",
        [*OK_LISTEN, *OK_CONNECT, "extra"],
        USAGE,
        "unexpected argument(s): extra",
    ),
    (
        "systemdWithoutSockets",
        ["--listen", "systemd:domain=INET:index=0", *OK_CONNECT],
        USAGE,
        "no such socket inherited from systemd",
    ),
    (
        "missingTLSKey",
        ["--listen", "ssl:0:privateKey={tmp}/missing.pem", *OK_CONNECT],
        USAGE,
        "No such file or directory",
    ),
    (
        "garbageTLSKey",
        ["--listen", "ssl:0:privateKey={garbage}", *OK_CONNECT],
        USAGE,
        "cannot load the TLS key or certificate",
    ),
    (
        "portInUse",
        ["--listen", f"tcp:{{busy}}:interface={LOOPBACK}", *OK_CONNECT],
        START,
        "cannot listen on tcp:{busy}",
    ),
    (
        "configBadPort",
        ["--config", "{tmp}/bad.conf"],
        USAGE,
        "{tmp}/bad.conf:3: bind port 0 out of range 1-65535",
    ),
    (
        "configOverlap",
        ["--config", "{tmp}/overlap.conf"],
        USAGE,
        "{tmp}/overlap.conf:2: 0.0.0.0 8080 overlaps the forward on line 1",
    ),
    (
        "configBadRule",
        ["--config", "{tmp}/rule.conf"],
        USAGE,
        "{tmp}/rule.conf:2: allow: bad address rule '10.0.0.0/33'",
    ),
    (
        "configMissing",
        ["--config", "{tmp}/missing.conf"],
        USAGE,
        "{tmp}/missing.conf: cannot read: No such file or directory",
    ),
    (
        "configAndListenWithoutConnect",
        ["--config", "{tmp}/overlap.conf", *OK_LISTEN],
        USAGE,
        "--connect is required",
    ),
    (
        "badAllow",
        [*OK_LISTEN, *OK_CONNECT, "--allow", "10.0.0.0/33"],
        USAGE,
        "--allow: bad address rule '10.0.0.0/33'",
    ),
    (
        "badDeny",
        [*OK_LISTEN, *OK_CONNECT, "--allow", "::1", "--deny", "localhost"],
        USAGE,
        "--deny: bad address rule 'localhost'",
    ),
    (
        "badProxyProtocolVersion",
        [*OK_LISTEN, *OK_CONNECT, "--proxy-protocol", "v3"],
        USAGE,
        "--proxy-protocol: expected v1 or v2, got 'v3'",
    ),
    (
        "proxyProtocolTimeoutZero",
        [*OK_LISTEN, *OK_CONNECT, "--accept-proxy-protocol"]
        + ["--proxy-protocol-timeout", "0"],
        USAGE,
        "--proxy-protocol-timeout: must be positive",
    ),
    (
        "workersZero",
        [*OK_LISTEN, *OK_CONNECT, "--workers", "0"],
        USAGE,
        "--workers: must be at least 1",
    ),
    (
        "badMetricsEndpoint",
        [*OK_LISTEN, *OK_CONNECT, "--metrics", "bogus:1"],
        USAGE,
        "--metrics bogus:1: Unknown endpoint type: 'bogus'",
    ),
    (
        "metricsPortInUse",
        [*OK_LISTEN, *OK_CONNECT, "--metrics", f"tcp:{{busy}}:interface={LOOPBACK}"],
        START,
        "--metrics tcp:{busy}:interface=127.0.0.1: cannot listen: ",
    ),
    (
        "workersPortInUse",
        ["--listen", f"tcp:{{busy}}:interface={LOOPBACK}", *OK_CONNECT]
        + ["--workers", "2"],
        START,
        "cannot listen on tcp:{busy}",
    ),
    (
        "unixSocketDirectoryMissing",
        ["--listen", "unix:{tmp}/no/such/dir/proxy.sock", *OK_CONNECT],
        USAGE,
        "--listen unix:{tmp}/no/such/dir/proxy.sock: the directory "
        "{tmp}/no/such/dir does not exist",
    ),
    (
        "listenUnknownParameter",
        ["--listen", f"tcp:0:interfce={LOOPBACK}", *OK_CONNECT],
        USAGE,
        "unknown parameter 'interfce' (did you mean interface=?)",
    ),
    (
        "connectUnknownParameter",
        [*OK_LISTEN, "--connect", f"tcp:{LOOPBACK}:9:timout=3"],
        USAGE,
        "unknown parameter 'timout' (did you mean timeout=?)",
    ),
    (
        "connectUnbracketedIPv6",
        [*OK_LISTEN, "--connect", "tcp:::1:80"],
        USAGE,
        "expected tcp:HOST:PORT, got 4 fields after tcp: (an IPv6 address goes "
        "in brackets",
    ),
    (
        "connectTrustRootsMissing",
        [*OK_LISTEN, "--connect", f"tls:{LOOPBACK}:443:trustRoots={{tmp}}/nope"],
        USAGE,
        "trustRoots= must name a directory of CA certificates that exists",
    ),
    (
        "listenPortOutOfRange",
        ["--listen", f"tcp:99999:interface={LOOPBACK}", *OK_CONNECT],
        USAGE,
        "--listen tcp:99999:interface=127.0.0.1: port 99999 out of range (0-65535)",
    ),
    (
        "sslListenWithoutKey",
        ["--listen", f"ssl:0:interface={LOOPBACK}", *OK_CONNECT],
        USAGE,
        "(an ssl: listener needs privateKey=FILE",
    ),
    (
        "routeSNIBadName",
        [*OK_LISTEN, "--route-sni", f"bad name=tcp:{LOOPBACK}:9"],
        USAGE,
        "--route-sni: bad server name pattern 'bad name'",
    ),
    (
        "engineSpliceWithTLS",
        [*OK_LISTEN, "--connect", f"tls:{LOOPBACK}:443", "--engine", "splice"],
        USAGE,
        "--engine splice: tls:127.0.0.1:443 is TLS",
    ),
]


#: rinetd files written to {tmp} for the --config rows.
_CONFIGS = {
    "bad.conf": "# bad port\nallow 127.0.0.1\n127.0.0.1 0 127.0.0.1 80\n",
    "overlap.conf": "127.0.0.1 8080 127.0.0.1 80\n0.0.0.0 8080 127.0.0.1 81\n",
    "rule.conf": "127.0.0.1 8080 127.0.0.1 80\nallow 10.0.0.0/33\n",
}


@functools.lru_cache(maxsize=1)
def _runAll() -> dict[str, tuple[int | None, str, str, dict[str, str]]]:
    """
    Run every row of L{BAD_INPUTS} at once; return C{name: (status, stdout,
    stderr, substitutions)}.
    """
    busy = socket.socket()
    busy.bind((LOOPBACK, 0))
    busy.listen(1)
    tmp = tempfile.mkdtemp(prefix="splicetx-cli-")
    garbage = os.path.join(tmp, "garbage.pem")
    with open(garbage, "w") as f:
        f.write("this is not a key\n")
    for name, text in _CONFIGS.items():
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)
    subs = {"busy": str(busy.getsockname()[1]), "tmp": tmp, "garbage": garbage}
    procs = {}
    try:
        for name, args, _, _ in BAD_INPUTS:
            procs[name] = subprocess.Popen(
                twistCommand([a.format(**subs) for a in args]),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        results = {}
        # One deadline for all of them, a guard against a process that
        # hangs (a bad input must exit at once), not a measure of speed: the
        # rows all start together, so on a loaded 2-core machine the first
        # one to be waited for may finish only with the last.
        deadline = time.monotonic() + 600
        for name, proc in procs.items():
            try:
                left = max(1.0, deadline - time.monotonic())
                out, err = proc.communicate(timeout=left)
                results[name] = (proc.returncode, out, err, subs)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                results[name] = (None, out, err, subs)
        return results
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        busy.close()


class BadInputTests(SynchronousTestCase):
    """
    One generated test per row of L{BAD_INPUTS}.
    """

    def check(self, name: str, status: int, text: str) -> None:
        code, out, err, subs = _runAll()[name]
        lines = [line for line in err.splitlines() if line.strip()]
        self.assertNotIn("Traceback", err + out)
        self.assertEqual(
            (code, len(lines)), (status, 1), f"status/stderr lines: {err!r}"
        )
        self.assertIn(text.format(**subs), lines[0])
        self.assertTrue(lines[0].startswith("splice-proxy: error: "), lines[0])


def _makeTest(name: str, args: list[str], status: int, text: str) -> Any:
    def test(self: BadInputTests) -> None:
        self.check(name, status, text)

    test.__name__ = f"test_{name}"
    test.__doc__ = (
        f"splice-proxy {' '.join(args) or '(no options)'} exits {status} with "
        f"one line containing {text!r}."
    )
    return test


for _row in BAD_INPUTS:
    setattr(BadInputTests, f"test_{_row[0]}", _makeTest(*_row))
del _row
