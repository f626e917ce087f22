# -*- test-case-name: tests.test_reload -*-
"""
SIGHUP: reload the C{--config} file of a running C{splice-proxy}.

A reload reads and checks the whole file first; a file that does not parse
is logged and the running configuration carries on.  Then the forwards of
the file are compared with the running ones, keyed by their listening
endpoint strings (L{compareConfigs}):

  - a forward whose listening strings are new is I{added}: its ports open;
    one that cannot open is logged and left out (the rest of the reload
    applies; the next reload tries it again);
  - one that is gone is I{removed}: its ports stop listening at once and
    its live connections finish on their own (they are part of a later
    drain);
  - one that kept its listening strings but has another upstream, other
    access rules or other limits per client is I{changed}: the same ports
    keep listening and the factory gets the new upstream, rules and limits,
    which apply to connections accepted from then on.  A live connection
    already chose its upstream and passed its rules, so it is untouched;
    it still counts against its client's new limits.

Only the C{--config} file is re-read: the other options (and the forward
of C{--listen}/C{--connect}) stay as they were at start.  One
C{splicetxEvent="reload"} event is logged per reload, with the C{added},
C{removed} and C{changed} counts, or the C{error}.  A reload that arrives
during a drain, or while another one is still being applied, is ignored
with a log line.

L{ServiceReloader} applies a reload to a single process
(L{SpliceProxyService <splicetx._app.service.SpliceProxyService>}); with
C{--workers} the supervisor (L{splicetx._app.supervisor}) checks the file the
same way and replaces its workers with a new generation instead.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import attr
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from splicetx._app.worker import isWorker
from splicetx._config.endpoints import explainEndpointError
from splicetx._config.files import readConfigFile
from splicetx._config.limits import reconfigureClientLimits
from splicetx._config.model import Forward, ProxyConfig
from splicetx._config.udpforward import checkUDPOptions
from splicetx._config.values import ConfigError
from splicetx._proxy.access import AccessControl
from splicetx._relay.runtime import LOG_PROXY

__all__ = [
    "ConfigChanges",
    "ServiceReloader",
    "compareConfigs",
    "installReloadSignal",
    "logReloadFailed",
    "logReloaded",
    "reloadedConfig",
]

_log = Logger(namespace=LOG_PROXY)


def reloadedConfig(config: ProxyConfig, text: str | None = None) -> ProxyConfig:
    """
    The running configuration with the forwards of its C{--config} file
    read again; the command line's forward (line number C{0}) is kept.

    @param config: the running configuration.
    @param text: the file's text, when already read.
    @raise ConfigError: when there is no file, it cannot be read, it has a
        problem, or it listens on an endpoint of the command line.
    """
    path = config.configFile
    if path is None:
        raise ConfigError("no --config file to reload")
    fromFile = readConfigFile(path, config.commandACL, text, not isWorker())
    forwards, warnings = fromFile.forwards, fromFile.warnings
    kept = [f for f in config.forwards if f.lineNumber == 0]
    taken = {d for f in kept for d in f.listens}
    for f in forwards:
        for d in f.listens:
            if d in taken:
                raise ConfigError(
                    f"listens on {d}, which --listen uses", path, f.lineNumber
                )
    checkUDPOptions(
        [*kept, *forwards],
        config.workers,
        config.sendProxyProtocol,
        config.acceptProxyProtocol,
    )
    return attr.evolve(config, forwards=[*kept, *forwards], warnings=warnings)


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class ConfigChanges:
    """
    What a reload changes, forward by forward.

    @ivar added: forwards of the new configuration only.
    @ivar removed: forwards of the old configuration only.
    @ivar changed: C{(old, new)} pairs of forwards with the same listening
        strings but another upstream, other access rules or other limits
        per client.
    """

    added: tuple[Forward, ...] = ()
    removed: tuple[Forward, ...] = ()
    changed: tuple[tuple[Forward, Forward], ...] = ()


def _aclKey(acl: AccessControl | None) -> str:
    return "" if acl is None or acl.empty else repr(acl)


def _limitsKey(forward: Forward) -> tuple[Any, ...]:
    return (
        forward.clientMaxConnections,
        forward.clientConnectionRate,
        forward.clientPrefix,
        forward.clientLimitAction,
        forward.connectionBandwidth,
        forward.clientBandwidth,
        forward.listenerBandwidth,
    )


def compareConfigs(old: ProxyConfig, new: ProxyConfig) -> ConfigChanges:
    """
    Compare the forwards of two configurations, keyed by
    L{Forward.listens}.

    @param old: the running configuration.
    @param new: the configuration to run.
    """
    before = {f.listens: f for f in old.forwards}
    after = {f.listens: f for f in new.forwards}
    return ConfigChanges(
        added=tuple(f for k, f in after.items() if k not in before),
        removed=tuple(f for k, f in before.items() if k not in after),
        changed=tuple(
            (before[k], f)
            for k, f in after.items()
            if k in before
            and (
                f.connect != before[k].connect
                or _aclKey(f.acl) != _aclKey(before[k].acl)
                or f.pool != before[k].pool
                or f.routes != before[k].routes
                or f.udpIdleTimeout != before[k].udpIdleTimeout
                or _limitsKey(f) != _limitsKey(before[k])
            )
        ),
    )


def logReloaded(
    path: str | None, changes: ConfigChanges, failed: list[str] | None = None
) -> None:
    """
    Log the C{reload} event of a reload that was applied: the C{added},
    C{removed} and C{changed} counts, the names of those forwards
    (C{addedForwards} ...) and the listening strings that C{failed}.

    @param path: the C{--config} file.
    @param changes: what changed.
    @param failed: listening strings that could not be opened.
    """
    _log.info(
        "reloaded {configFile}: {added} forward(s) added, {removed} removed, "
        "{changed} changed",
        splicetxEvent="reload",
        configFile=path,
        added=len(changes.added),
        removed=len(changes.removed),
        changed=len(changes.changed),
        failed=failed or [],
        addedForwards=[f.listen for f in changes.added],
        removedForwards=[f.listen for f in changes.removed],
        changedForwards=[new.listen for _, new in changes.changed],
    )


def refuseReload(draining: bool, path: str | None, busy: bool) -> bool:
    """
    Log why a SIGHUP is ignored, if it is: during a drain, without a
    C{--config} file, or while the previous reload is still being applied.

    @return: C{True} when the reload must not go ahead.
    """
    if draining:
        why = "draining"
    elif path is None:
        why = "no --config file"
    elif busy:
        why = "the previous one is still being applied"
    else:
        return False
    _log.info("reload ignored: {why}", why=why, splicetxEvent="reload", ignored=True)
    return True


def logReloadFailed(path: str | None, error: str) -> None:
    """
    Log the C{reload} event of a reload that was not applied.

    @param path: the C{--config} file.
    @param error: one line saying why.
    """
    _log.error(
        "reload of {configFile} failed, the running configuration is kept: {error}",
        splicetxEvent="reload",
        configFile=path,
        error=error,
    )


def installReloadSignal(reactor: Any, reload: Callable[[], object]) -> None:
    """
    Call C{reload()} in the reactor thread on every SIGHUP.

    @param reactor: the running reactor.
    @param reload: what to call.
    """

    def onSignal(signum: int, frame: Any) -> None:
        reactor.callFromThread(reload)

    signal.signal(signal.SIGHUP, onSignal)


class ServiceReloader:
    """
    Applies reloads to a running L{SpliceProxyService
    <splicetx._app.service.SpliceProxyService>} (see the module docstring).

    It uses the service's C{config}, C{factories}, C{buildFactory},
    C{pipePool}, C{ports}, C{portsByFactory}, C{retiredFactories},
    C{upstreamEndpoint}, C{serverEndpoint}, C{listening} and
    C{stopping}.

    @ivar service: the service.
    """

    def __init__(self, service: Any) -> None:
        self.service = service
        self._busy = False

    def reload(self) -> Deferred[ConfigChanges | None]:
        """
        Reload the C{--config} file.

        @return: a C{Deferred} firing with the L{ConfigChanges} applied, or
            C{None} when the reload was ignored or failed (it never fails).
        """
        service = self.service
        path = service.config.configFile
        if refuseReload(service.stopping, path, self._busy) or path is None:
            return succeed(None)
        try:
            new = reloadedConfig(service.config)
        except ConfigError as e:
            logReloadFailed(path, str(e))
            return succeed(None)
        self._busy = True
        d = maybeDeferred(self._apply, new)

        def done(result: Any) -> Any:
            self._busy = False
            if isinstance(result, Failure):
                _log.failure("reload failed", result, splicetxEvent="reload")
                return None
            return result

        return d.addBoth(done)

    def _apply(self, new: ProxyConfig) -> Deferred[ConfigChanges | None]:
        service = self.service
        old = service.config
        # Forget the removed forwards whose last connection has ended.
        service.retiredFactories = [
            f for f in service.retiredFactories if f.liveProtocols
        ]
        changes = compareConfigs(old, new)
        byKey = dict(
            zip((f.listens for f in old.forwards), service.factories, strict=True)
        )
        try:
            upstreams = [service.upstreamEndpoint(n) for _, n in changes.changed]
        except Exception as e:
            logReloadFailed(old.configFile, explainEndpointError(e))
            return succeed(None)
        for warning in new.warnings:
            _log.warn("{warning}", warning=warning, splicetxEvent="config")
        for (_, forward), upstream in zip(changes.changed, upstreams, strict=True):
            factory = byKey[forward.listens]
            if not service.replaceUpstream(factory, upstream):
                _log.warn(
                    "reload: {forward} changes between one upstream and a pool; "
                    "that needs a restart, so its upstream stays as it was",
                    splicetxEvent="config",
                    forward=forward.listen,
                )
            acl = forward.acl
            factory.acl = None if acl is None or acl.empty else acl
            if getattr(factory, "protocolName", None) == "udp":
                idle = forward.udpIdleTimeout
                factory.idleTimeout = old.udpIdleTimeout if idle is None else idle
            else:
                reconfigureClientLimits(factory, new, forward)
        stopping = []
        for forward in changes.removed:
            factory = byKey.pop(forward.listens)
            service.retiredFactories.append(factory)
            for port in service.portsByFactory.pop(factory, []):
                factory.removeListeningPort(port)
                if port in service.ports:
                    service.ports.remove(port)
                stopping.append(maybeDeferred(port.stopListening))
                _log.info(
                    "stopped listening on {description} (removed by reload)",
                    splicetxEvent="unlistening",
                    description=forward.listen,
                    forward=factory.forwardName,
                )
        failed: list[str] = []

        def openAdded(_: Any) -> Deferred[ConfigChanges | None]:
            # After the removed ports closed, so a port may move between
            # forwards in one reload.
            opening = [self._open(forward, byKey, failed) for forward in changes.added]
            return gatherResults(opening).addCallback(finish)

        def finish(_: Any) -> ConfigChanges | None:
            # An added forward that could not listen is left out.
            forwards = [f for f in new.forwards if f.listens in byKey]
            service.config = attr.evolve(new, forwards=forwards)
            service.factories = [byKey[f.listens] for f in forwards]
            service.factory = service.factories[0] if service.factories else None
            logReloaded(old.configFile, changes, failed)
            return changes

        return gatherResults(stopping).addCallback(openAdded)

    def _open(
        self, forward: Forward, byKey: dict[tuple[str, ...], Any], failed: list[str]
    ) -> Deferred[None]:
        service = self.service
        config = service.config
        try:
            upstream = service.upstreamEndpoint(forward)
            factory = service.buildFactory(upstream, service.pipePool, forward)
        except Exception as e:
            failed.extend(forward.listens)
            _log.error(
                "reload: cannot serve {listen}: {error}",
                splicetxEvent="reload-listen-failed",
                listen=forward.listen,
                error=explainEndpointError(e),
            )
            return succeed(None)
        pairs = list(zip(config.listenEndpoints(forward), forward.listens, strict=True))

        def listen(description: str) -> Deferred[Any]:
            return service.serverEndpoint(description).listen(factory)

        attempts = [maybeDeferred(listen, d) for d, _ in pairs]

        def settled(results: list[tuple[bool, Any]]) -> None:
            bad = [
                (given, r)
                for (ok, r), (_, given) in zip(results, pairs, strict=True)
                if not ok
            ]
            good = [r for ok, r in results if ok]
            if bad:
                for port in good:
                    port.stopListening()
                for given, reason in bad:
                    failed.append(given)
                    _log.error(
                        "reload: cannot listen on {listen}: {error}; that forward "
                        "is left out",
                        splicetxEvent="reload-listen-failed",
                        listen=given,
                        error=explainEndpointError(reason.value),
                    )
                return
            byKey[forward.listens] = factory
            for port, (description, _) in zip(good, pairs, strict=True):
                service.listening(port, description, factory)

        return DeferredList(attempts, consumeErrors=True).addCallback(settled)
