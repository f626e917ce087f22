# -*- test-case-name: tests.test_clientlimits_files -*-
"""
The limits per client of a C{--config} file: C{client-max-connections},
C{client-connection-rate} and C{client-prefix} in a TOML forward or
C{[defaults]}, and in a rinetd line's brackets; the command line's values
as their default; and a SIGHUP reload that changes them (in process, and
through C{twist splice-proxy --config} over 127.0.0.1).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from splicetx._app.reload import compareConfigs
from splicetx._config.limits import (
    clientLimitsFor,
    forwardBandwidths,
    forwardLimits,
    reconfigureClientLimits,
)
from splicetx._config.model import Forward, ProxyConfig
from splicetx._config.rinetd import parseConfig
from splicetx._config.toml import parseToml
from splicetx._config.values import ConfigError
from splicetx._proxy.clientlimits import ConnectionRate

from ._cli_support import LOOPBACK, ProxyProcess
from .test_ops_cli import freePorts, scrape, total
from .test_reload import DEADLINE, echoBackend, readExactly

#: A TOML forward's first lines.
FORWARD = '[[forward]]\nlisten = "tcp:1"\nconnect = "tcp:host=h:port=2"\n'


def refusedForConnections(port: int) -> float:
    """
    The refusals for too many live connections, in the metrics on C{port}.
    """
    values = scrape(port)
    return total(
        {k: v for k, v in values.items() if 'reason="client_connections"' in k},
        "splicetx_connections_refused_total{",
    )


def rinetd(options: str) -> Forward:
    """
    The one forward of a rinetd line with C{options} in brackets.
    """
    [forward] = parseConfig(
        f"127.0.0.1 8000 127.0.0.1 9000 [{options}]\n", "r.conf"
    ).forwards
    return forward


def limitsOf(forward: Forward) -> tuple[Any, ...]:
    return (
        forward.clientMaxConnections,
        forward.clientConnectionRate,
        forward.clientPrefix,
    )


class TomlLimitsTests(SynchronousTestCase):
    """
    The keys in a TOML file.
    """

    def test_forwardAndDefaults(self) -> None:
        """
        A forward's own keys win over C{[defaults]}; a forward with none
        leaves them C{None} (the command line's).
        """
        text = (
            '[defaults]\nclient-prefix = "24,64"\n'
            'client-connection-rate = "5/s:20"\n'
            + FORWARD
            + "client-max-connections = 3\n"
            + FORWARD.replace("tcp:1", "tcp:3")
            + 'client-connection-rate = "60/m"\n'
        )
        forwards = parseToml(text, "c.toml").forwards
        self.assertEqual(
            [limitsOf(f) for f in forwards],
            [
                (3, ConnectionRate(5.0, 20), (24, 64)),
                (None, ConnectionRate(1.0, 1), (24, 64)),
            ],
        )
        self.assertEqual(limitsOf(parseToml(FORWARD).forwards[0]), (None,) * 3)

    def test_bandwidthsAndAction(self) -> None:
        """
        A forward's own bandwidths (C{0}: no limit, over the command
        line's) and refusal action, in TOML and in rinetd brackets, win
        over the command line's; a bad one names the key.
        """
        [own] = parseToml(
            FORWARD
            + 'connection-bandwidth = "10MB/s"\nclient-bandwidth = 0\n'
            + 'listener-bandwidth = 1048576\nclient-limit-action = "close"\n',
            "c.toml",
        ).forwards
        fromRinetd = rinetd(
            "connection-bandwidth=10MB/s,client-bandwidth=0,"
            "listener-bandwidth=1MiB/s,client-limit-action=close"
        )
        for forward in (own, fromRinetd):
            self.assertEqual(
                (
                    forward.connectionBandwidth,
                    forward.clientBandwidth,
                    forward.listenerBandwidth,
                    forward.clientLimitAction,
                ),
                (10 * 1024 * 1024, 0, 1024 * 1024, "close"),
            )
        config = ProxyConfig(
            forwards=[own], clientBandwidth=5000, listenerBandwidth=7000
        )
        self.assertEqual(
            [forwardBandwidths(config, f) for f in (own, Forward(listens=["tcp:1"]))],
            [(10 * 1024 * 1024, None, 1024 * 1024), (None, 5000, 7000)],
        )
        self.assertIsNone(clientLimitsFor(config, own))
        limits = clientLimitsFor(config, Forward(listens=["tcp:1"]))
        assert limits is not None
        self.assertEqual((limits.bandwidth, limits.reset), (5000, True))
        for line, problem in [
            ('client-bandwidth = "fast"', "expected bytes per second"),
            ('client-limit-action = "drop"', "expected reset or close"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parseToml(FORWARD + line + "\n", "c.toml")
            self.assertIn(problem, str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            rinetd("listener-bandwidth=lots")
        self.assertIn("expected bytes per second", str(caught.exception))

    def test_bad(self) -> None:
        """
        A bad value is one line naming the file, the forward and the key.
        """
        for line, problem in [
            ("client-max-connections = -1", "must be at least 0"),
            ('client-max-connections = "many"', "expected a whole number"),
            ("client-connection-rate = 5", "expected a rate like 5/s"),
            ('client-prefix = "33,64"', "expected IPv4,IPv6 prefix lengths"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parseToml(FORWARD + line + "\n", "c.toml")
            message = str(caught.exception)
            key = line.split(" ")[0]
            self.assertTrue(
                message.startswith(f"c.toml: forward[0].{key}: {problem}"), message
            )
            self.assertNotIn("\n", message)
        with self.assertRaises(ConfigError) as caught:
            parseToml('[defaults]\nclient-prefix = "1"\n' + FORWARD, "c.toml")
        self.assertIn("forward[0].client-prefix", str(caught.exception))

    def test_udp(self) -> None:
        """
        A UDP forward's own limits are an error; those of C{[defaults]}
        do not apply to it.
        """
        udp = FORWARD.replace('"tcp:1"', '"udp:1"').replace("tcp:host", "udp:host")
        with self.assertRaises(ConfigError) as caught:
            parseToml(udp + "client-max-connections = 1\n", "c.toml")
        self.assertIn("applies to TCP forwards", str(caught.exception))
        [forward] = parseToml("[defaults]\nclient-max-connections = 1\n" + udp).forwards
        self.assertIsNone(forward.clientMaxConnections)


class RinetdLimitsTests(SynchronousTestCase):
    """
    The bracket options of a rinetd line.
    """

    def test_good(self) -> None:
        """
        The three options, with the prefix's comma, and with other options.
        """
        self.assertEqual(
            limitsOf(
                rinetd(
                    "client-max-connections=20,client-connection-rate=5/s,"
                    "client-prefix=24,64"
                )
            ),
            (20, ConnectionRate(5.0, 5), (24, 64)),
        )
        forward = rinetd("client-prefix=24, 64, src=127.0.0.2")
        self.assertEqual(limitsOf(forward), (None, None, (24, 64)))
        self.assertIn("bindAddress=127.0.0.2", forward.connect)
        self.assertEqual(limitsOf(rinetd("client-max-connections=0"))[0], 0)

    def test_bad(self) -> None:
        """
        A bad value is one line naming the file, the line and the option;
        the options belong on a TCP forward's line.
        """
        for options, problem in [
            ("client-max-connections=x", "client-max-connections: expected a whole"),
            ("client-connection-rate=5/d", "client-connection-rate: expected a rate"),
            ("client-prefix=24", "client-prefix: expected IPv4,IPv6"),
            ("client-prefix=24,64,7", "bad option '7': expected name=value"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                rinetd(options)
            self.assertTrue(
                str(caught.exception).startswith(f"r.conf:1: {problem}"),
                str(caught.exception),
            )
        for text, problem in [
            (
                "127.0.0.1 8000 127.0.0.1 9000\n"
                "upstream 127.0.0.1 9001 [client-max-connections=1]\n",
                "r.conf:2: client-max-connections belongs on the forward's line",
            ),
            (
                "127.0.0.1 53/udp 127.0.0.1 53/udp [client-max-connections=1]\n",
                "r.conf:1: client limits apply to TCP forwards, not UDP",
            ),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parseConfig(text, "r.conf")
            self.assertEqual(str(caught.exception), problem)


class ForwardLimitsTests(SynchronousTestCase):
    """
    The command line's limits are the default of a forward's own; a reload
    gives a factory new ones and keeps the live counts.
    """

    def test_default(self) -> None:
        """
        A forward's own values win, one by one; its C{0} is no limit.
        """
        config = ProxyConfig(
            forwards=[Forward(listens=["tcp:1"])],
            clientMaxConnections=5,
            clientConnectionRate=ConnectionRate(1.0, 2),
        )
        plain = Forward(listens=["tcp:1"])
        own = Forward(listens=["tcp:1"], clientMaxConnections=0, clientPrefix=(24, 64))
        self.assertEqual(
            [forwardLimits(config, plain), forwardLimits(config, own)],
            [
                (5, ConnectionRate(1.0, 2), (32, 128)),
                (None, ConnectionRate(1.0, 2), (24, 64)),
            ],
        )
        self.assertIsNone(clientLimitsFor(ProxyConfig(forwards=[plain]), plain))
        limits = clientLimitsFor(
            ProxyConfig(forwards=[plain]),
            Forward(listens=["tcp:1"], clientMaxConnections=2),
        )
        assert limits is not None
        self.assertEqual(limits.maxConnections, 2)

    def test_onlyLimitsChanged(self) -> None:
        """
        A forward whose only change is its limits is changed.
        """
        old = ProxyConfig(forwards=[Forward(listens=["tcp:1"], connect="tcp:h:1")])
        new = ProxyConfig(
            forwards=[
                Forward(listens=["tcp:1"], connect="tcp:h:1", clientMaxConnections=2)
            ]
        )
        self.assertEqual(len(compareConfigs(old, new).changed), 1)
        self.assertEqual(compareConfigs(new, new).changed, ())

    def test_reconfigure(self) -> None:
        """
        A reload raises the cap of a live table (its live connection still
        counts), sets limits on a factory that had none, and takes them off.
        """

        class Factory:
            clientLimits: Any = None

        factory = Factory()
        config = ProxyConfig(forwards=[Forward(listens=["tcp:1"])])
        one = Forward(listens=["tcp:1"], clientMaxConnections=1)
        reconfigureClientLimits(factory, config, one)
        limits = factory.clientLimits
        address = IPv4Address("TCP", "127.0.0.1", 1)
        held = limits.admit(address, 0.0)
        refusals = [limits.admit(address, 0.0).refusal is None]
        reconfigureClientLimits(
            factory, config, Forward(listens=["tcp:1"], clientMaxConnections=2)
        )
        self.assertIs(factory.clientLimits, limits)
        refusals += [limits.admit(address, 0.0).refusal is None for _ in range(2)]
        self.assertEqual([held.refusal is None, *refusals], [True, False, True, False])
        reconfigureClientLimits(factory, config, Forward(listens=["tcp:1"]))
        self.assertIsNone(factory.clientLimits)
        reconfigureClientLimits(
            factory,
            config,
            Forward(
                listens=["tcp:1"],
                connectionBandwidth=1000,
                clientBandwidth=2000,
                listenerBandwidth=3000,
                clientLimitAction="close",
            ),
        )
        limits = factory.clientLimits
        self.assertEqual(
            (
                factory.connectionBandwidth,
                factory.listenerBandwidth,
                limits.bandwidth,
                limits.reset,
            ),
            (1000, 3000, 2000, False),
        )


class ReloadLimitsTests(SynchronousTestCase):
    """
    C{twist splice-proxy --config FILE}: a SIGHUP raises a forward's cap
    per client without dropping its live connection.
    """

    def writeConfig(self, path: str, line: str) -> None:
        tmp = path + ".new"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, path)

    def second(self, port: int, data: bytes) -> bytes:
        """
        A whole exchange on a new connection: C{b""} when refused (reset).
        """
        try:
            with socket.create_connection((LOOPBACK, port), DEADLINE) as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                out = b""
                while chunk := s.recv(65536):
                    out += chunk
                return out
        except OSError:
            return b""

    def started(self, options: str, first: Any, *args: str) -> Any:
        """
        C{twist splice-proxy --config} on a rinetd file of one forward to
        an echo backend, with C{options % first} in its brackets.

        @return: C{(the file's path, its line with a C{%} left for the
            options, the forward's port, the L{ProxyProcess})}, once ready.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "rinetd.conf")
        backend = echoBackend(self, b"E")
        (port,) = freePorts(1)
        line = f"{LOOPBACK} {port} {LOOPBACK} {backend} {options}"
        self.writeConfig(path, line % first)
        proxy = ProxyProcess(["--config", path, *args])
        self.addCleanup(proxy.kill)
        proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "ready", DEADLINE)
        return path, line, port, proxy

    def reloaded(self, proxy: ProxyProcess, path: str, line: str) -> None:
        """
        Write C{line} to C{path} and SIGHUP C{proxy}: one forward changed.
        """
        self.writeConfig(path, line)
        seen = len(self.reloads(proxy))
        proxy.signal(signal.SIGHUP)
        proxy.waitForEvent(lambda e: len(self.reloads(proxy)) > seen, DEADLINE)
        event = self.reloads(proxy)[seen]
        self.assertEqual((event.get("changed"), event.get("error")), (1, None))

    def test_raisedCapOnReload(self) -> None:
        """
        With a cap of 1, a second connection while one is held is refused
        (recorded as rejected, counted as client_connections); after the
        file says 2 and a SIGHUP, the held connection still echoes and a
        second one is served.
        """
        path, line, port, proxy = self.started(
            "[client-max-connections=%d]", 1, "--metrics", f"tcp:0:interface={LOOPBACK}"
        )
        metrics = proxy.waitForEvent(lambda e: e.get("splicetxEvent") == "metrics")
        held = socket.create_connection((LOOPBACK, port), DEADLINE)
        self.addCleanup(held.close)
        held.sendall(b"one")
        self.assertEqual(readExactly(held, 4), b"Eone")
        self.assertEqual(self.second(port, b"two"), b"")
        [record] = proxy.waitForConnections(1, DEADLINE)
        self.assertEqual(record["reason"], "rejected")
        self.assertIn("at its limit of 1 live connections", record["detail"])
        self.assertEqual(refusedForConnections(metrics["port"]), 1)

        self.reloaded(proxy, path, line % 2)

        held.sendall(b"still here")
        self.assertEqual(readExactly(held, 10), b"still here")
        self.assertEqual(self.second(port, b"three"), b"Ethree")
        held.shutdown(socket.SHUT_WR)
        self.assertEqual(readExactly(held, 1), b"")
        self.assertEqual(refusedForConnections(metrics["port"]), 1)

    def test_bandwidthOnReload(self) -> None:
        """
        A SIGHUP that sets a forward's connection-bandwidth (and a client
        and a listener bandwidth) keeps the live connection, which still
        echoes at full speed, and limits the new ones: 768 KiB echoed on a
        new connection at 256 KiB/s take at least 1.8 s.
        """
        path, line, port, proxy = self.started("[client-max-connections=9%s]", "")
        held = socket.create_connection((LOOPBACK, port), DEADLINE)
        self.addCleanup(held.close)
        held.sendall(b"one")
        self.assertEqual(readExactly(held, 4), b"Eone")

        self.reloaded(
            proxy,
            path,
            line
            % (
                ",connection-bandwidth=256KiB/s,client-bandwidth=1MiB/s,"
                "listener-bandwidth=2MiB/s"
            ),
        )

        big = os.urandom(768 * 1024)
        held.sendall(big)
        self.assertEqual(readExactly(held, len(big)), big)
        started = time.monotonic()
        self.assertEqual(self.second(port, big), b"E" + big)
        self.assertGreaterEqual(time.monotonic() - started, 1.8)
        held.shutdown(socket.SHUT_WR)
        self.assertEqual(readExactly(held, 1), b"")

    def reloads(self, proxy: ProxyProcess) -> list[dict[str, Any]]:
        return [e for e in list(proxy.events) if e.get("splicetxEvent") == "reload"]
