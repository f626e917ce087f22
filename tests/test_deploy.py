# -*- test-case-name: tests.test_deploy -*-
"""
The deploy recipes under C{deploy/} do what they say: the systemd units' own
C{ExecStart} serves a socket-activated port and drains on SIGTERM, the
container recipe runs as a non-root user, and the Kubernetes manifests give a
drain the time it needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from splicetx.testing import digest

from ._cli_support import (
    LOOPBACK,
    ProxyProcess,
    connectProxy,
    echoChunks,
    readAll,
    runAsync,
    sendAll,
    startServer,
)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SERVICE = DEPLOY / "systemd" / "splicetx.service"
SOCKET = DEPLOY / "systemd" / "splicetx.socket"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
KUBERNETES = DEPLOY / "kubernetes"


def unitSettings(path: Path) -> dict[str, list[tuple[str, str]]]:
    """
    Read a systemd unit file: C{{section: [(key, value), ...]}}, with
    backslash continuations joined and comments dropped, as systemd reads it.
    """
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if pending and line and line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def setting(sections: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    """
    The last value of C{key} in C{section} (later assignments win).

    @raise KeyError: when it is not set.
    """
    values = [v for k, v in sections.get(section, []) if k == key]
    if not values:
        raise KeyError(f"{key}= not set in [{section}]")
    return values[-1]


def unitEnvironment(sections: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """
    The variables the service's C{Environment=} lines set.
    """
    env: dict[str, str] = {}
    for key, value in sections["Service"]:
        if key == "Environment":
            for assignment in shlex.split(value):
                name, _, val = assignment.partition("=")
                env[name] = val
    return env


def execStart(
    sections: dict[str, list[tuple[str, str]]],
    env: dict[str, str],
    key: str = "ExecStart",
) -> list[str]:
    """
    The service's C{ExecStart} (or another C{key}) as an argument list:
    C{${NAME}} replaced from C{env} (one word each, as systemd does), and the
    C{twist} executable replaced by this interpreter's C{-m twisted}.
    """
    line = setting(sections, "Service", key)
    assert line[0] not in "@-:+!", f"unexpected ExecStart prefix: {line!r}"
    argv = [
        re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word)
        for word in shlex.split(line)
    ]
    assert os.path.basename(argv[0]) == "twist", argv[0]
    return [sys.executable, "-m", "twisted", *argv[1:]]


def optionValue(argv: list[str], option: str) -> str:
    """
    The word after C{option} in C{argv}.
    """
    return argv[argv.index(option) + 1]


def freePort() -> int:
    """
    A loopback port that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


async def _connectWhenListening(
    port: int, timeout: float = 30.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """
    Connect to C{port} on loopback once something listens there (retrying
    while the connection is refused).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await connectProxy(port)
        except ConnectionRefusedError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


class SystemdUnitTests(SynchronousTestCase):
    """
    C{deploy/systemd}: the service's C{ExecStart}, run under
    C{systemd-socket-activate} with the socket unit's descriptor name, relays
    through the inherited socket and drains on SIGTERM.
    """

    def setUp(self) -> None:
        self.service = unitSettings(SERVICE)
        self.socket = unitSettings(SOCKET)

    def test_socketActivatedRelayDrainsOnSIGTERM(self) -> None:
        """
        A connection through the socket handed over like systemd does is
        relayed byte-exact both ways, spliced; a SIGTERM in the middle of it
        stops the proxy only after the connection finished, with status 0.
        """
        activate = shutil.which("systemd-socket-activate")
        if activate is None:
            raise SkipTest(
                "systemd-socket-activate (package systemd) is not installed: "
                "it is what hands the proxy its socket as systemd would"
            )
        name = setting(self.socket, "Socket", "FileDescriptorName")
        before = os.urandom(512 * 1024)
        after = os.urandom(1024 * 1024 + 7)
        port = freePort()
        done: dict[str, Any] = {}

        async def scenario() -> None:
            server, uport = await startServer(echoChunks)
            env = unitEnvironment(self.service)
            env["UPSTREAM"] = f"tcp:{LOOPBACK}:{uport}"
            env["METRICS"] = f"tcp:0:interface={LOOPBACK}"
            argv = execStart(self.service, env)
            passed = {**env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
            # systemd-socket-activate passes on only PATH, HOME, USER and
            # TERM, as systemd starts services with a clean environment.
            command = [
                activate,
                "--listen",
                f"{LOOPBACK}:{port}",
                f"--fdname={name}",
                *(f"--setenv={k}={v}" for k, v in passed.items()),
                *argv,
            ]
            proxy = ProxyProcess([], command=command)
            self.addCleanup(proxy.kill)
            done["proxy"] = proxy
            # Like systemd, systemd-socket-activate starts the service on the
            # first connection attempt: this client waits in the socket's
            # queue meanwhile, its bytes in the kernel's buffer.
            r, w = await _connectWhenListening(port)
            await sendAll(w, before, eof=False)
            done["port"] = await asyncio.to_thread(proxy.listeningPort, 30)
            echoed = await r.readexactly(len(before))
            proxy.signal(signal.SIGTERM)
            draining = await asyncio.to_thread(
                proxy.waitForEvent, lambda e: e.get("signal") == "SIGTERM"
            )
            done["draining"] = draining
            await sendAll(w, after)
            echoed += await readAll(r)
            w.close()
            server.close()
            done["echoed"] = echoed

        runAsync(scenario(), 60)
        proxy = done["proxy"]
        self.assertEqual(done["port"], port)
        self.assertEqual(done["draining"].get("count"), 1)
        self.assertEqual(digest(done["echoed"]), digest(before + after))
        self.assertEqual(proxy.wait(60), 0, proxy.stderr)
        [event] = proxy.connections()
        self.assertEqual(event["reason"], "done")
        self.assertEqual(event["engine"], "splice")
        self.assertEqual(event["bytesClientToUpstream"], len(before + after))

    def test_checkBeforeStart(self) -> None:
        """
        C{ExecStartPre} is C{ExecStart} with C{--check}: it passes for the
        unit as shipped and fails with one line for a bad C{UPSTREAM}.
        """
        env = unitEnvironment(self.service)
        env["METRICS"] = f"tcp:0:interface={LOOPBACK}"
        pre = execStart(self.service, env, "ExecStartPre")
        self.assertEqual(pre, [*execStart(self.service, env), "--check"])
        good = subprocess.run(pre, capture_output=True, text=True, timeout=60)
        self.assertEqual(good.returncode, 0, good.stderr)
        self.assertIn("configuration OK", good.stdout)
        env["UPSTREAM"] = f"tcp:{LOOPBACK}"
        bad = subprocess.run(
            execStart(self.service, env, "ExecStartPre"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(bad.returncode, 64)
        self.assertIn("--connect tcp:127.0.0.1: missing the port", bad.stderr)

    def test_socketMatchesListen(self) -> None:
        """
        The service listens on the socket unit's socket: its C{--listen
        systemd:} names the unit's C{FileDescriptorName}, with the address
        family of its C{ListenStream}.
        """
        argv = execStart(self.service, unitEnvironment(self.service))
        listen = optionValue(argv, "--listen")
        fields = dict(f.split("=", 1) for f in listen.split(":")[1:])
        self.assertEqual(listen.split(":")[0], "systemd")
        self.assertEqual(
            fields["name"], setting(self.socket, "Socket", "FileDescriptorName")
        )
        stream = setting(self.socket, "Socket", "ListenStream")
        family = "INET6" if stream.startswith("[") else "INET"
        self.assertEqual(fields["domain"], family)
        self.assertIn(
            "splicetx.socket", setting(self.service, "Unit", "Requires").split()
        )

    def test_stopWaitsForTheDrain(self) -> None:
        """
        systemd stops the service with SIGTERM, to the main process only, and
        waits longer than the proxy's C{--drain-timeout} before SIGKILL.
        """
        argv = execStart(self.service, unitEnvironment(self.service))
        drain = float(optionValue(argv, "--drain-timeout"))
        self.assertEqual(setting(self.service, "Service", "KillSignal"), "SIGTERM")
        self.assertEqual(setting(self.service, "Service", "KillMode"), "mixed")
        stop = setting(self.service, "Service", "TimeoutStopSec")
        self.assertGreater(float(stop), drain)

    def test_descriptorsAndUser(self) -> None:
        """
        C{LimitNOFILE} leaves room for thousands of spliced connections at 6
        descriptors each, within the kernel's default C{fs.nr_open}, and the
        service runs as a dynamic non-root user without capabilities.
        """
        limit = int(setting(self.service, "Service", "LimitNOFILE"))
        self.assertGreaterEqual(limit // 6, 100_000)
        self.assertLessEqual(limit, 1048576)
        self.assertEqual(setting(self.service, "Service", "DynamicUser"), "yes")
        self.assertNotIn("User", [k for k, _ in self.service["Service"]])
        self.assertEqual(setting(self.service, "Service", "CapabilityBoundingSet"), "")

    def test_unitsParse(self) -> None:
        """
        C{systemd-analyze verify} reads both units without a complaint (every
        hardening line is a setting this systemd knows, with a valid value).
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze (package systemd) is not installed")
        out = Path(tempfile.mkdtemp(prefix="splicetx-units-"))
        self.addCleanup(shutil.rmtree, out, True)
        shutil.copy(SOCKET, out / SOCKET.name)
        # verify checks that ExecStart's program exists: point it at one.
        text = SERVICE.read_text()
        program = shlex.split(setting(self.service, "Service", "ExecStart"))[0]
        (out / SERVICE.name).write_text(text.replace(program, sys.executable))
        result = subprocess.run(
            [analyze, "verify", "--man=no", SOCKET.name, SERVICE.name],
            cwd=out,
            capture_output=True,
            text=True,
            timeout=60,
        )
        complaints = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if "splicetx." in line
        ]
        self.assertEqual(complaints, [])


class LogrotateRecipeTests(SynchronousTestCase):
    """
    C{deploy/logrotate/splicetx} rotates the files the proxy reopens on
    SIGUSR1 (the reopening itself: C{tests/test_logrotate.py}).
    """

    def setUp(self) -> None:
        self.text = (DEPLOY / "logrotate" / "splicetx").read_text()
        self.rules = "\n".join(
            line for line in self.text.splitlines() if not line.startswith("#")
        )

    def test_signalsTheMainProcess(self) -> None:
        """
        After rotating, it sends SIGUSR1 once (sharedscripts) to the
        service's main process, which passes it on to its workers.
        """
        self.assertIn("sharedscripts", self.rules.split())
        script = self.rules.split("postrotate", 1)[1].split("endscript", 1)[0]
        command = shlex.split(script.split("||")[0].split("2>")[0])
        self.assertEqual(command[:2], ["systemctl", "kill"])
        self.assertIn("--signal=SIGUSR1", command)
        self.assertIn("--kill-whom=main", command)
        self.assertEqual(command[-1], SERVICE.name)

    def test_filesAndCompression(self) -> None:
        """
        It rotates the two files its comment's command line writes, keeps
        the newest rotated file uncompressed (lines reach it until the
        signal) and neither truncates nor creates files (the proxy does).
        """
        header = self.rules.split("{", 1)[0].split()
        self.assertEqual(
            header, ["/var/log/splicetx/proxy.log", "/var/log/splicetx/access.log"]
        )
        self.assertIn("--log-file /var/log/splicetx/proxy.log", self.text)
        self.assertIn("--access-log /var/log/splicetx/access.log", self.text)
        words = self.rules.split()
        self.assertIn("delaycompress", words)
        self.assertNotIn("copytruncate", words)
        self.assertNotIn("create", words)
        if shutil.which("logrotate") is not None:
            result = subprocess.run(
                ["logrotate", "--debug", str(DEPLOY / "logrotate" / "splicetx")],
                capture_output=True,
                text=True,
                timeout=60,
            )
            self.assertNotIn("error", result.stderr.lower())


class ContainerRecipeTests(SynchronousTestCase):
    """
    C{deploy/container/Dockerfile}, checked line by line (there is no docker
    on the development machine, so the image itself is not built here).
    """

    def setUp(self) -> None:
        self.instructions: list[tuple[str, str]] = []
        pending = ""
        for raw in DOCKERFILE.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line, pending = pending + line, ""
            word, _, rest = line.partition(" ")
            self.instructions.append((word.upper(), rest.strip()))

    def last(self, instruction: str) -> str:
        values = [v for i, v in self.instructions if i == instruction]
        self.assertTrue(values, f"no {instruction} in the Dockerfile")
        return values[-1]

    def test_slimPythonBase(self) -> None:
        """
        The image starts from a slim Python 3 image and pip-installs the
        project with the metrics extra.
        """
        self.assertRegex(self.last("FROM"), r"^python:3\.\d+-slim$")
        runs = " ".join(v for i, v in self.instructions if i == "RUN")
        self.assertIn("pip install '.[metrics]'", runs)

    def test_nonRootUser(self) -> None:
        """
        The last C{USER} is a numeric non-root uid (so Kubernetes'
        C{runAsNonRoot} can check it), and nothing runs as root after it.
        """
        user = self.last("USER")
        uid = user.split(":")[0]
        self.assertTrue(uid.isdigit(), user)
        self.assertNotEqual(int(uid), 0)
        names = [i for i, _ in self.instructions]
        lastUser = len(names) - 1 - names[::-1].index("USER")
        self.assertNotIn("RUN", names[lastUser:])

    def test_entrypointAndStop(self) -> None:
        """
        The entry point is C{twist splice-proxy} in exec form (so twist is
        PID 1 and gets the stop signal), the stop signal is SIGTERM, and
        the proxy and metrics ports are exposed.
        """
        self.assertEqual(json.loads(self.last("ENTRYPOINT")), ["twist", "splice-proxy"])
        self.assertEqual(self.last("STOPSIGNAL"), "SIGTERM")
        self.assertEqual(self.last("EXPOSE").split(), ["8989", "9100"])

    def test_dockerignore(self) -> None:
        """
        The build context sent for the Dockerfile is only what the image
        installs: everything else is ignored, caches included.
        """
        ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text()
        lines = [
            line for line in ignore.splitlines() if line and not line.startswith("#")
        ]
        self.assertEqual(lines[0], "*")
        for kept in ["!pyproject.toml", "!README.md", "!src/"]:
            self.assertIn(kept, lines)
        self.assertIn("**/dropin.cache", lines)


class KubernetesManifestTests(SynchronousTestCase):
    """
    C{deploy/kubernetes}: the Deployment drains within its grace period,
    sizes its workers from its CPU limit, and the Service and
    PodDisruptionBudget select its pods.
    """

    def setUp(self) -> None:
        try:
            import yaml
        except ImportError:
            raise SkipTest("PyYAML is not installed (pip install '.[test]')")
        self.docs: dict[str, Any] = {}
        for path in sorted(KUBERNETES.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                self.docs[doc["kind"]] = doc
        self.pod = self.docs["Deployment"]["spec"]["template"]
        [self.container] = self.pod["spec"]["containers"]
        self.args = self.container["args"]

    def test_drainWithinGracePeriod(self) -> None:
        """
        The preStop sleep plus C{--drain-timeout} fit in
        C{terminationGracePeriodSeconds} (which counts from preStop), so the
        kubelet never SIGKILLs a drain.
        """
        drain = float(optionValue(self.args, "--drain-timeout"))
        command = self.container["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(command[0], "sleep")
        preStop = float(command[1])
        self.assertGreater(preStop, 0)
        grace = self.pod["spec"]["terminationGracePeriodSeconds"]
        self.assertGreater(grace, preStop + drain)

    def test_probesOnMetricsPort(self) -> None:
        """
        Readiness and liveness probes ask for C{/healthz} on the container
        port that C{--metrics} listens on.
        """
        metricsPort = int(optionValue(self.args, "--metrics").split(":")[1])
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        for probe in ["readinessProbe", "livenessProbe"]:
            get = self.container[probe]["httpGet"]
            self.assertEqual(get["path"], "/healthz")
            self.assertEqual(ports[get["port"]], metricsPort)

    def test_workersFromCPULimit(self) -> None:
        """
        C{--workers} is the C{WORKERS} variable, which the downward API
        fills with the container's CPU limit in whole CPUs; requests and
        limits are set.
        """
        self.assertEqual(optionValue(self.args, "--workers"), "$(WORKERS)")
        [workers] = [e for e in self.container["env"] if e["name"] == "WORKERS"]
        ref = workers["valueFrom"]["resourceFieldRef"]
        self.assertEqual(ref["resource"], "limits.cpu")
        self.assertEqual(ref["containerName"], self.container["name"])
        self.assertEqual(ref["divisor"], "1")
        resources = self.container["resources"]
        for kind in ["requests", "limits"]:
            self.assertEqual(set(resources[kind]), {"cpu", "memory"})

    def test_selectorsMatchPods(self) -> None:
        """
        The Service and the PodDisruptionBudget select the Deployment's pods,
        and the Service targets the proxy's container port.
        """
        labels = self.pod["metadata"]["labels"]
        service = self.docs["Service"]["spec"]
        self.assertEqual(service["selector"], labels)
        pdb = self.docs["PodDisruptionBudget"]["spec"]
        self.assertEqual(pdb["selector"]["matchLabels"], labels)
        listen = optionValue(self.args, "--listen")
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        [servicePort] = service["ports"]
        self.assertEqual(ports[servicePort["targetPort"]], int(listen.split(":")[1]))

    def test_nonRoot(self) -> None:
        """
        The pod runs as the image's non-root uid with no privilege escalation.
        """
        self.assertTrue(self.pod["spec"]["securityContext"]["runAsNonRoot"])
        self.assertEqual(self.pod["spec"]["securityContext"]["runAsUser"], 10001)
        security = self.container["securityContext"]
        self.assertFalse(security["allowPrivilegeEscalation"])
        self.assertEqual(security["capabilities"]["drop"], ["ALL"])

    def test_schemas(self) -> None:
        """
        C{kubernetes-validate --strict} accepts every manifest (the schemas
        of its default Kubernetes version, no unknown fields).
        """
        validate = shutil.which("kubernetes-validate")
        if validate is None:
            raise SkipTest("kubernetes-validate is not installed")
        paths = sorted(str(p) for p in KUBERNETES.glob("*.yaml"))
        result = subprocess.run(
            [validate, "--strict", *paths],
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stdout.count(" passed "), len(paths))
