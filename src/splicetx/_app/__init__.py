"""
The C{twist splice-proxy} application.

It imports every layer below it; nothing imports it.

 - C{tap}: the command-line options (one C{Options}) and C{makeService}.
 - C{service}: the service: listeners, metrics, drain on signals.
 - C{listening}: what a start opens (a listener that must open at once,
   the C{--metrics} endpoint), for one process and the supervisor.
 - C{poolservice}: the running pools of a forward, built from the
   configuration's values.
 - C{reload}: SIGHUP re-reads the configuration file.
 - C{logfiles}: SIGUSR1 reopens the log files (logrotate).
 - C{supervisor}, C{processes}, C{worker}: C{--workers N}: the
   supervisor's service, the worker processes, and the worker side.
 - C{filelimit}: sizing to the file descriptor limit.
 - C{protocolclass}: C{--protocol} and C{--factory}: a user's classes, their
   options and their factories.
 - C{embed}: the service around a user's classes from Python (public as
   C{splicetx.service}).
 - C{check}: C{--check}.
 - C{udpservice}: the UDP forwards of the service.
"""
