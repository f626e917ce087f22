"""
C{twist splice-proxy --check} as a real subprocess: good configurations of
every kind exit 0 with one line, bad ones exit 64 naming every problem, and
nothing listens or keeps running.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

from twisted.trial.unittest import SynchronousTestCase

from ._cli_support import LOOPBACK, twistCommand
from .test_tls import makeCertificate

CONNECT = ["--connect", f"tcp:{LOOPBACK}:9"]


def check(*args: str) -> tuple[int, str, str]:
    """
    Run C{twist splice-proxy ARGS --check}; return its status and output.
    """
    proc = subprocess.run(
        twistCommand([*args, "--check"]),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout, proc.stderr


class CheckTests(SynchronousTestCase):
    """
    Good and bad configurations through C{--check}.
    """

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="splicetx-check-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.busy = socket.socket()
        self.busy.bind((LOOPBACK, 0))
        self.busy.listen(1)
        self.addCleanup(self.busy.close)
        self.busyPort = self.busy.getsockname()[1]

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def assertGood(self, *args: str) -> str:
        status, out, err = check(*args)
        self.assertEqual((status, err), (0, ""), out)
        self.assertIn("configuration OK", out)
        self.assertEqual(len(out.splitlines()), 1, out)
        return out

    def assertBad(self, *args: str) -> list[str]:
        return self.assertBadResult(check(*args))

    def assertBadResult(self, result: tuple[int, str, str]) -> list[str]:
        status, out, err = result
        self.assertEqual(status, 64, (out, err))
        self.assertNotIn("Traceback", out + err)
        lines = err.splitlines()
        self.assertTrue(
            lines and all(line.startswith("splice-proxy: ") for line in lines)
        )
        return lines

    def test_goodFlags(self) -> None:
        """
        A plain forward, a pool and a metrics endpoint on free ports pass.
        """
        out = self.assertGood(
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--listen",
            "tcp6:0:interface=[::1]",
            *CONNECT,
            "--connect",
            f"tcp:{LOOPBACK}:10 weight=2",
            "--idle-timeout",
            "500ms",
            "--metrics",
            f"tcp:0:interface={LOOPBACK}",
        )
        self.assertIn("(1 forward(s), 2 listener(s))", out)

    def test_goodConfigFiles(self) -> None:
        """
        A rinetd file and a TOML file pass.
        """
        probe = socket.socket()
        probe.bind((LOOPBACK, 0))
        free = probe.getsockname()[1]
        probe.close()
        rinetd = self.write(
            "r.conf", f"{LOOPBACK} {free} {LOOPBACK} 9\nallow 127.0.0.1\n"
        )
        self.assertGood("--config", rinetd)
        toml = self.write(
            "f.toml",
            f'[[forward]]\nlisten = "tcp:0:interface={LOOPBACK}"\n'
            f'connect = ["tcp:{LOOPBACK}:9", "tcp:{LOOPBACK}:10"]\n'
            'fail-timeout = "500ms"\n',
        )
        self.assertGood("--config", toml)

    def test_goodCertificate(self) -> None:
        """
        An ssl: listener whose key and certificate load passes.
        """
        key, cert = makeCertificate(self.tmp)
        self.assertGood(
            "--listen",
            f"ssl:0:interface={LOOPBACK}:privateKey={key}:certKey={cert}",
            *CONNECT,
        )

    def test_systemdListenerSkipped(self) -> None:
        """
        A systemd: listener is not bound (the service manager holds it),
        even outside systemd.
        """
        self.assertGood("--listen", "systemd:domain=INET:index=0", *CONNECT)

    def test_everyPortProblemListed(self) -> None:
        """
        Listeners and the metrics endpoint that cannot be bound are all
        listed, one line each, and counted.
        """
        busy = f"tcp:{self.busyPort}:interface={LOOPBACK}"
        lines = self.assertBad(
            "--listen",
            busy,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            *CONNECT,
            "--metrics",
            busy,
        )
        self.assertEqual(
            lines,
            [
                f"splice-proxy: error: --listen {busy}: cannot listen: the "
                "address is already in use",
                f"splice-proxy: error: --metrics {busy}: cannot listen: the "
                "address is already in use",
                "splice-proxy: configuration has 2 problem(s)",
            ],
        )

    def test_configFilePortInUse(self) -> None:
        """
        A --config forward whose port is taken is named by its listener.
        """
        path = self.write("r.conf", f"{LOOPBACK} {self.busyPort} {LOOPBACK} 9\n")
        lines = self.assertBad("--config", path)
        self.assertIn(f"tcp:{self.busyPort}", lines[0])
        self.assertIn("already in use", lines[0])

    def test_badInputs(self) -> None:
        """
        Bad flags, values, files, endpoints and certificates: one line each,
        status 64.
        """
        garbage = self.write("garbage.pem", "not a key\n")
        badRinetd = self.write("bad.conf", f"{LOOPBACK} 0 {LOOPBACK}\n")
        badToml = self.write(
            "bad.toml",
            '[[forward]]\nlisten = "tcp:0"\nconnect = "tcp:a:1"\n'
            'fail-timeout = "soon"\n',
        )
        listen = ["--listen", f"tcp:0:interface={LOOPBACK}"]
        rows = [
            ([*listen, *CONNECT, "--idle-timeout", "soon"], "--idle-timeout"),
            ([*listen, "--connect", f"tcp:{LOOPBACK}"], "missing the port"),
            (["--config", badRinetd], "bad.conf:1:"),
            (["--config", badToml], "forward[0].fail-timeout"),
            (
                ["--listen", f"ssl:0:privateKey={garbage}", *CONNECT],
                "cannot load the TLS key or certificate",
            ),
            ([*listen, *CONNECT, "--route-sni", "a b=tcp:127.0.0.1:9"], "--route-sni"),
        ]
        # The six checks are independent processes: run them at once.
        with ThreadPoolExecutor(len(rows)) as pool:
            results = list(pool.map(lambda row: check(*row[0]), rows))
        for (args, text), result in zip(rows, results, strict=True):
            bad = self.assertBadResult(result)
            lines = [line for line in bad if "problem(s)" not in line]
            self.assertEqual(len(lines), 1, (args, lines))
            self.assertIn(text, lines[0])

    def test_nothingListens(self) -> None:
        """
        A passing check leaves its ports free: it bound them for a moment.
        """
        probe = socket.socket()
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
        probe.close()
        self.assertGood("--listen", f"tcp:{port}:interface={LOOPBACK}", *CONNECT)
        again = socket.socket()
        self.addCleanup(again.close)
        again.bind((LOOPBACK, port))
