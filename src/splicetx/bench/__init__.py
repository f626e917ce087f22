"""
C{python -m splicetx.bench}: measure how much CPU per byte splicetx saves.

The bench starts, on loopback only, a backend and each proxy under test as
separate processes (no proxy at all, splicetx with the splice engine at several
pipe sizes, splicetx with the copy engine, Twisted's own C{twist portforward},
a minimal Python C{epoll} + C{splice} loop as a yardstick, and C{socat} and
C{haproxy} when installed), runs load through them with the proxies
interleaved (a shuffled order per repetition), and writes a Markdown table,
a JSON file and a PNG chart.  See C{docs/benchmarks.md} and
C{python -m splicetx.bench --help}.

Everything here is private except L{main}.
"""

from splicetx.bench._cli import main

__all__ = ["main"]
