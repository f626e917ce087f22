/*
 * splicetx._relay._ccore: the compiled core of the relay's hot loop
 * (docs/design-decisions.md, "A compiled core, optional").
 *
 * Functions each doing in C what the pure-Python reference
 * (splicetx._relay.socketloop, splicetx._relay.direction) does with the same
 * result; splicetx._relay.core chooses which one runs:
 *
 *   dispatch(epfd, members, maxevents, readEvents, writeEvents, failed)
 *       One turn of a SocketLoop: epoll_wait(epfd, ..., 0) and, for each
 *       ready member (looked up by fd in the dict members), member.source
 *       .readable() when the event is in readEvents and member.reading, then
 *       member.sink.writable() when in writeEvents and member.writing.
 *       Returns the number of events taken.  When a member's call raises,
 *       the member is appended to the list failed and the exception
 *       propagates; the events not handled yet are reported again by the
 *       level-triggered set at the next turn.
 *
 *       With a 7th argument turn that is not None (core.turn), a member
 *       whose source is a Direction (see setup_direction) gets turn()
 *       first, and source.readable(got) only when turn() leaves it work.
 *
 *       Given the SocketLoop in place of epfd, it is SocketLoop.doRead's
 *       whole turn: it polls loop._fd again while the last poll found
 *       events, maxevents events in all, and stops when loop._fd is -1 (a
 *       member's call closed the set); it returns the events handled.
 *
 *   interest(m, reading, writing)
 *       A loop member's new interest (LoopMember.start/stop Reading/Writing):
 *       m.reading and m.writing set, and its SocketLoop's set told in C, as
 *       SocketLoop.update(m) does; see ccore_interest below.
 *
 *   accept(fd) -> (newfd, address) | None
 *       accept4 of an IPv4 or IPv6 listening socket, the new descriptor
 *       non-blocking; None when no client waits (see ccore_accept).
 *
 *   move(srcfd, pipeWrite, pipeRead, dstfd, count, piece) -> (n, left, err)
 *       splice(srcfd -> pipe, count) and, when 0 < n <= piece, splice the
 *       pipe into dstfd once (a short write stops: the destination is full).
 *         n < 0:  the read failed with errno err (EAGAIN: drained)
 *         n == 0: end of stream
 *         n > 0:  read n bytes; left of them are still in the pipe (all n
 *                 when n > piece: the caller writes them itself); err is 0,
 *                 the write's errno, or -1 when the write moved 0 bytes.
 *       EINTR is retried (after running signal handlers).
 *
 *   turn(d, bulkRead, piece, window, clock) -> int
 *       Direction.readable's common case for a small message, in C: see
 *       ccore_turn below and the Python reference in
 *       splicetx._relay.direction.
 *
 *   client_hello(data, maxSize) -> None | tuple
 *       The common case of reading a TLS ClientHello for SNI routing, in
 *       its own source file (_ccore_hello.c, declared in _ccore.h).
 *
 *   proxy_header(data, v1, v2) -> None | tuple
 *       The common case of reading a PROXY protocol header (_ccore_proxy.c).
 *
 * The GIL is kept: every system call here is non-blocking.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "_ccore.h"
#include "structmember.h"

#define MAX_EVENTS 1024
#define SPLICE_FLAGS (SPLICE_F_NONBLOCK | SPLICE_F_MOVE)

static PyObject *s_reading, *s_writing, *s_source, *s_sink, *s_readable,
    *s_writable;

/* Direction.readable's fast turn (ccore_turn). */
static PyObject *s_pipe, *s_limit, *s_bulk, *s_pool, *s_turns, *s_src,
    *s_dst, *s_srcfd, *s_dstfd, *s_inPipe, *s_moved, *s_eof, *s_left,
    *s_smallUntil, *s_bulkUntil, *s_noteSmall, *s_spent, *s_stopReading,
    *s_startWriting, *s_finish, *s_writeFailed, *s_spliceFailed, *s_engine,
    *s_take, *s__idle, *s_readFD, *s_writeFD, *s_size, *s_lent, *s_onReturn,
    *s_reserved, *s__maxPipes;
/* Set by setup(): the pool classes whose take() the fast turn may defer,
 * and the clock it may read itself (time.monotonic). */
static PyObject *poolType, *unreservedType, *monotonic;
/* Set by setup_direction(): the Direction class whose readable() dispatch
 * may replace by turn(), and its module's globals (the constants turn()
 * takes, read there so that a test's patch holds). */
static PyObject *directionType, *directionGlobals;
static PyObject *s_BULK_READ, *s_PIECE, *s_SMALL_WINDOW, *s_monotonicNow, *s__fd;
/* interest(): a member's loop and descriptor, the loop's set. */
static PyObject *s_loop, *s_fd, *s_members, *s__added, *s_update;

static PyObject *ccore_turn(PyObject *self, PyObject *const *args,
                            Py_ssize_t nargs);

/*
 * Attribute access by slot offset.  The hot loop reads and writes the same
 * few attributes of the same few classes (Direction, Pipe, the members, the
 * pools, the turn budget), all declared in __slots__; PyObject_GetAttr finds
 * each through the type's dictionary and its descriptor every time.  A
 * SlotCache remembers, per call site, the type it last saw and the offset
 * of the attribute's slot in its instances, valid while the type's version
 * tag is unchanged (any change to the class, a test's patch included,
 * assigns a new one): then the slot is read or written directly, as the
 * member descriptor would.  Anything else (no slot, a class with its own
 * __getattribute__ or __setattr__, an empty slot) takes PyObject_GetAttr or
 * PyObject_SetAttr, so the behaviour is the same either way.
 */
typedef struct {
    PyObject **name;
    PyTypeObject *type; /* borrowed: only compared, with its version tag */
    unsigned int version;
    Py_ssize_t offset;
} SlotCache;

#define SLOT(var) {&(var), NULL, 0, 0}

/* Whether tp's version tag stands for its current attributes. */
#if PY_VERSION_HEX >= 0x030C0000
#define VERSION_VALID(tp) ((tp)->tp_version_tag != 0)
#else
#define VERSION_VALID(tp)                                                    \
    (((tp)->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) && (tp)->tp_version_tag != 0)
#endif

static Py_ssize_t
slot_offset(PyObject *o, SlotCache *c)
{
    PyTypeObject *tp = Py_TYPE(o);
    if (c->type == tp && VERSION_VALID(tp) && tp->tp_version_tag == c->version)
        return c->offset;
    c->type = NULL;
    Py_ssize_t offset = -1;
    if (tp->tp_getattro == PyObject_GenericGetAttr &&
        tp->tp_setattro == PyObject_GenericSetAttr) {
        PyObject *descr = _PyType_Lookup(tp, *c->name);
        /* The slot must be one of tp's own layout: a member descriptor
         * copied into an unrelated class describes another layout (Python
         * raises TypeError there; the generic call below does). */
        if (descr != NULL && Py_TYPE(descr) == &PyMemberDescr_Type &&
            PyType_IsSubtype(tp, PyDescr_TYPE(descr))) {
            PyMemberDef *md = ((PyMemberDescrObject *)descr)->d_member;
            if (md->type == T_OBJECT_EX && !(md->flags & READONLY))
                offset = md->offset;
        }
    }
    /* Remembered either way: no slot (-1) is as stable as the class. */
    if (VERSION_VALID(tp)) {
        c->type = tp;
        c->version = tp->tp_version_tag;
        c->offset = offset;
    }
    return offset;
}

/* o.<name>: a new reference, or NULL with an error set. */
static PyObject *
attr_get(PyObject *o, SlotCache *c)
{
    Py_ssize_t off = slot_offset(o, c);
    if (off > 0) {
        PyObject *v = *(PyObject **)((char *)o + off);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(o, *c->name);
}

/* o.<name> = v: 0, or -1 with an error set. */
static int
attr_set(PyObject *o, SlotCache *c, PyObject *v)
{
    Py_ssize_t off = slot_offset(o, c);
    if (off > 0) {
        PyObject **slot = (PyObject **)((char *)o + off);
        PyObject *old = *slot;
        *slot = Py_NewRef(v);
        Py_XDECREF(old);
        return 0;
    }
    return PyObject_SetAttr(o, *c->name, v);
}

/* The call sites' caches: c_<object>_<attribute>, where the object is a
 * loop member (m), a Direction (d), a Pipe (p), the turn budget (t), an
 * UnreservedPipes (u) or a PipePool (pp). */
static SlotCache c_m_reading = SLOT(s_reading), c_m_source = SLOT(s_source),
                 c_m_writing = SLOT(s_writing), c_m_sink = SLOT(s_sink);
static SlotCache c_d_pipe = SLOT(s_pipe), c_d_limit = SLOT(s_limit),
                 c_d_bulk = SLOT(s_bulk), c_d_pool = SLOT(s_pool),
                 c_d_srcfd = SLOT(s_srcfd), c_d_dstfd = SLOT(s_dstfd),
                 c_d_engine = SLOT(s_engine), c_d_eof = SLOT(s_eof),
                 c_d_src = SLOT(s_src), c_d_dst = SLOT(s_dst),
                 c_d_inPipe = SLOT(s_inPipe), c_d_turns = SLOT(s_turns),
                 c_d_moved = SLOT(s_moved);
static SlotCache c_p_readFD = SLOT(s_readFD), c_p_writeFD = SLOT(s_writeFD),
                 c_p_size = SLOT(s_size);
static SlotCache c_t_smallUntil = SLOT(s_smallUntil),
                 c_t_bulkUntil = SLOT(s_bulkUntil), c_t_left = SLOT(s_left);
static SlotCache c_u_onReturn = SLOT(s_onReturn), c_u_pool = SLOT(s_pool),
                 c_u_lent = SLOT(s_lent);
static SlotCache c_pp_maxPipes = SLOT(s__maxPipes),
                 c_pp_reserved = SLOT(s_reserved), c_pp_idle = SLOT(s__idle);
/* interest(): a member whose interest changes (i); interest() and dispatch():
 * its SocketLoop (l). */
static SlotCache c_i_reading = SLOT(s_reading), c_i_writing = SLOT(s_writing),
                 c_i_loop = SLOT(s_loop), c_i_fd = SLOT(s_fd);
static SlotCache c_l_members = SLOT(s_members), c_l_fd = SLOT(s__fd),
                 c_l_added = SLOT(s__added);

static int
as_int(PyObject *o, int *out)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < INT_MIN || v > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "value out of range for a C int");
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Call member.<side>.<method>() when member.<flag> is true: 0 or -1. */
static int
call_side(PyObject *m, SlotCache *flag, SlotCache *side, PyObject *method)
{
    PyObject *want = attr_get(m, flag);
    if (want == NULL)
        return -1;
    int truth = PyObject_IsTrue(want);
    Py_DECREF(want);
    if (truth <= 0)
        return truth;
    PyObject *target = attr_get(m, side);
    if (target == NULL)
        return -1;
    PyObject *r = PyObject_CallMethodNoArgs(target, method);
    Py_DECREF(target);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/*
 * As call_side(m, reading, source, readable), but a Direction's turn is
 * tried in C first (targs: turn()'s arguments, the first left for the
 * direction); when it leaves anything to Python, source.readable(got).
 */
static int
read_side(PyObject *m, PyObject **targs)
{
    PyObject *want = attr_get(m, &c_m_reading);
    if (want == NULL)
        return -1;
    int truth = PyObject_IsTrue(want);
    Py_DECREF(want);
    if (truth <= 0)
        return truth;
    PyObject *source = attr_get(m, &c_m_source);
    if (source == NULL)
        return -1;
    PyObject *r;
    if (Py_TYPE(source) != (PyTypeObject *)directionType) {
        r = PyObject_CallMethodNoArgs(source, s_readable);
    }
    else {
        targs[0] = source;
        PyObject *got = ccore_turn(NULL, targs, 5);
        targs[0] = NULL;
        if (got == NULL) {
            Py_DECREF(source);
            return -1;
        }
        long g = PyLong_AsLong(got);
        if (g == 0) {
            Py_DECREF(got);
            Py_DECREF(source);
            return 0;
        }
        r = PyObject_CallMethodOneArg(source, s_readable, got);
        Py_DECREF(got);
    }
    Py_DECREF(source);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* An int attribute through a SlotCache: 0, or -1 with an error set. */
static int
get_int(PyObject *o, SlotCache *c, int *out)
{
    PyObject *v = attr_get(o, c);
    if (v == NULL)
        return -1;
    int rc = as_int(v, out);
    Py_DECREF(v);
    return rc;
}

/* One epoll_wait of the set and its events: the number of events, or -1
 * with an exception set (the member that raised is appended to failed). */
static int
dispatch_once(int epfd, int maxevents, PyObject *members, int readEvents,
              int writeEvents, PyObject *failed, PyObject **targs)
{
    struct epoll_event evs[MAX_EVENTS];

    if (maxevents < 1)
        maxevents = 1;
    if (maxevents > MAX_EVENTS)
        maxevents = MAX_EVENTS;
    int n = epoll_wait(epfd, evs, maxevents, 0);
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        uint32_t ev = evs[i].events;
        PyObject *key = PyLong_FromLong(evs[i].data.fd);
        if (key == NULL)
            return -1;
        PyObject *m = PyDict_GetItemWithError(members, key);
        Py_DECREF(key);
        if (m == NULL) {
            if (PyErr_Occurred())
                return -1;
            continue;
        }
        /* The member may leave the dict (and be freed) during its calls. */
        Py_INCREF(m);
        int rc = 0;
        if ((ev & (uint32_t)readEvents) && targs[1] != NULL)
            rc = read_side(m, targs);
        else if (ev & (uint32_t)readEvents)
            rc = call_side(m, &c_m_reading, &c_m_source, s_readable);
        if (rc == 0 && (ev & (uint32_t)writeEvents))
            rc = call_side(m, &c_m_writing, &c_m_sink, s_writable);
        if (rc < 0) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            int appended = PyList_Append(failed, m);
            Py_DECREF(m);
            if (appended < 0) {
                Py_XDECREF(type);
                Py_XDECREF(value);
                Py_XDECREF(tb);
                return -1;
            }
            PyErr_Restore(type, value, tb);
            return -1;
        }
        Py_DECREF(m);
    }
    return n;
}

/* dispatch(set, members, maxevents, readEvents, writeEvents, failed[, turn])
 *
 * set is the epoll descriptor (one poll, its events handled) or the
 * SocketLoop itself: then, as SocketLoop.doRead's turn, the set is polled
 * again while the last poll found events, up to maxevents events in all,
 * and as long as the loop's _fd is open (a member's call may close the
 * set).  Returns the number of events handled. */
static PyObject *
ccore_dispatch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int epfd, maxevents, readEvents, writeEvents;

    /* turn() arguments after the direction, when turn is given. */
    PyObject *targs[5] = {NULL, NULL, NULL, NULL, NULL};

    if (nargs != 6 && nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "dispatch() takes 6 or 7 arguments");
        return NULL;
    }
    if (nargs == 7 && args[6] != Py_None && directionType != NULL) {
        PyObject *names[4] = {s_BULK_READ, s_PIECE, s_SMALL_WINDOW, s_monotonicNow};
        targs[1] = Py_None; /* marks "fast" */
        for (int k = 0; k < 4; k++) {
            targs[k + 1] = PyDict_GetItemWithError(directionGlobals, names[k]);
            if (targs[k + 1] == NULL) {
                if (PyErr_Occurred())
                    return NULL;
                targs[1] = NULL;
                break;
            }
        }
    }
    PyObject *members = args[1], *failed = args[5];
    if (!PyDict_Check(members) || !PyList_Check(failed)) {
        PyErr_SetString(PyExc_TypeError, "dispatch(): members dict, failed list");
        return NULL;
    }
    if (as_int(args[2], &maxevents) || as_int(args[3], &readEvents) ||
        as_int(args[4], &writeEvents))
        return NULL;
    if (PyLong_Check(args[0])) {
        if (as_int(args[0], &epfd))
            return NULL;
        int n = dispatch_once(epfd, maxevents, members, readEvents, writeEvents,
                              failed, targs);
        return n < 0 ? NULL : PyLong_FromLong(n);
    }
    PyObject *loop = args[0];
    long total = 0;
    while (maxevents > 0) {
        if (get_int(loop, &c_l_fd, &epfd))
            return NULL;
        if (epfd < 0)
            break;
        int n = dispatch_once(epfd, maxevents, members, readEvents, writeEvents,
                              failed, targs);
        if (n < 0)
            return NULL;
        if (n == 0)
            break;
        total += n;
        maxevents -= n;
    }
    return PyLong_FromLong(total);
}



/* interest(m, reading, writing)
 *
 * LoopMember's start/stop Reading/Writing once the interest changes:
 * m.reading and m.writing set, and m's SocketLoop told, as
 * SocketLoop.update(m) does (the Python reference): EPOLL_CTL_MOD for a
 * member in the set, EPOLL_CTL_ADD (and members[fd] = m) for a new one
 * while the set is open and carried by the reactor, members.pop(fd) and
 * EPOLL_CTL_DEL (its errors ignored) for one that wants nothing.  What
 * involves the reactor (the set to make or to hand to the reactor, the
 * last member leaving) is left to loop.update(m). */
static PyObject *
ccore_interest(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "interest() takes 3 arguments");
        return NULL;
    }
    PyObject *m = args[0];
    int reading = PyObject_IsTrue(args[1]);
    int writing = reading < 0 ? -1 : PyObject_IsTrue(args[2]);
    if (writing < 0)
        return NULL;
    if (attr_set(m, &c_i_reading, reading ? Py_True : Py_False) ||
        attr_set(m, &c_i_writing, writing ? Py_True : Py_False))
        return NULL;

    PyObject *loop = NULL, *members = NULL, *key = NULL, *added = NULL;
    PyObject *result = NULL;
    int fd, epfd, isAdded;
    uint32_t mask = (reading ? EPOLLIN : 0) | (writing ? EPOLLOUT : 0);
    struct epoll_event ev;

    if ((loop = attr_get(m, &c_i_loop)) == NULL || get_int(m, &c_i_fd, &fd) ||
        (members = attr_get(loop, &c_l_members)) == NULL ||
        get_int(loop, &c_l_fd, &epfd) || (added = attr_get(loop, &c_l_added)) == NULL)
        goto out;
    if (!PyDict_CheckExact(members))
        goto slow;
    if ((isAdded = PyObject_IsTrue(added)) < 0 || (key = PyLong_FromLong(fd)) == NULL)
        goto out;
    PyObject *current = PyDict_GetItemWithError(members, key); /* borrowed */
    if (current == NULL && PyErr_Occurred())
        goto out;
    memset(&ev, 0, sizeof(ev));
    ev.events = mask;
    ev.data.fd = fd;
    if (mask) {
        if (epfd < 0 || (current == NULL && !isAdded))
            goto slow;
        if (current != NULL) {
            if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) < 0) {
                PyErr_SetFromErrno(PyExc_OSError);
                goto out;
            }
            goto done;
        }
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto out;
        }
        if (PyDict_SetItem(members, key, m) < 0) {
            epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
            goto out;
        }
        goto done;
    }
    if (current == NULL)
        goto done; /* not in the set: nothing to forget */
    if (PyDict_GET_SIZE(members) <= 1 || epfd < 0)
        goto slow; /* the last member leaves: the loop leaves the reactor */
    if (PyDict_DelItem(members, key) < 0)
        goto out;
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);

done:
    result = Py_NewRef(Py_None);
    goto out;

slow:
    result = PyObject_CallMethodOneArg(loop, s_update, m);

out: /* result: NULL (an error is set), or what done or slow set */
    Py_XDECREF(key);
    Py_XDECREF(added);
    Py_XDECREF(members);
    Py_XDECREF(loop);
    return result;
}

/* ---- accept ----------------------------------------------------------- */

/* An IPv4 or IPv6 peer address as socket.accept() gives it: (host, port),
 * or (host, port, flowinfo, scope_id); NULL with an error set, or without
 * one for another family. */
static PyObject *
peer_address(const struct sockaddr_storage *ss)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, (int)ntohs(a->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(siII)", host, (int)ntohs(a->sin6_port),
                             (unsigned int)ntohl(a->sin6_flowinfo),
                             (unsigned int)a->sin6_scope_id);
    }
    return NULL;
}

/* accept(fd) -> (newfd, address) | None
 *
 * accept4(fd, SOCK_NONBLOCK | SOCK_CLOEXEC) of an IPv4 or IPv6 listening
 * socket: the new descriptor is non-blocking already (no FIONBIO after),
 * and the address is what socket.accept() returns.  None when no client
 * is waiting (EAGAIN: no exception to raise and catch per round of
 * accepts); other errors raise OSError as socket.accept() does.  EINTR is
 * retried (after running signal handlers). */
static PyObject *
ccore_accept(PyObject *self, PyObject *arg)
{
    int fd, nfd;
    struct sockaddr_storage ss;
    socklen_t len;

    if (as_int(arg, &fd))
        return NULL;
    for (;;) {
        len = sizeof(ss);
        memset(&ss, 0, sizeof(ss));
        nfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (nfd >= 0)
            break;
        if (errno == EINTR) {
            if (PyErr_CheckSignals())
                return NULL;
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *addr;
    if (len == 0)
        /* No address (as socket.accept() says it: None). */
        addr = Py_NewRef(Py_None);
    else if ((addr = peer_address(&ss)) == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_ValueError,
                     "accept(): address family %d is not IPv4 or IPv6",
                     (int)ss.ss_family);
    PyObject *result = addr == NULL ? NULL : Py_BuildValue("(iN)", nfd, addr);
    if (result == NULL)
        close(nfd); /* nobody else holds it */
    return result;
}

static PyObject *
ccore_move(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int srcfd, wfd, rfd, dstfd;
    Py_ssize_t count, piece;
    ssize_t n, m, left;
    int err = 0;

    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "move() takes 6 arguments");
        return NULL;
    }
    if (as_int(args[0], &srcfd) || as_int(args[1], &wfd) ||
        as_int(args[2], &rfd) || as_int(args[3], &dstfd))
        return NULL;
    count = PyLong_AsSsize_t(args[4]);
    if (count == -1 && PyErr_Occurred())
        return NULL;
    piece = PyLong_AsSsize_t(args[5]);
    if (piece == -1 && PyErr_Occurred())
        return NULL;
    if (count < 0) {
        PyErr_SetString(PyExc_ValueError, "move(): negative count");
        return NULL;
    }

    for (;;) {
        n = splice(srcfd, NULL, wfd, NULL, (size_t)count, SPLICE_FLAGS);
        if (n >= 0 || errno != EINTR)
            break;
        if (PyErr_CheckSignals())
            return NULL;
    }
    if (n < 0)
        return Py_BuildValue("nni", (Py_ssize_t)-1, (Py_ssize_t)0, errno);
    left = n;
    if (n == 0 || n > piece)
        return Py_BuildValue("nni", (Py_ssize_t)n, (Py_ssize_t)left, 0);
    for (;;) {
        m = splice(rfd, NULL, dstfd, NULL, (size_t)left, SPLICE_FLAGS);
        if (m >= 0 || errno != EINTR)
            break;
        if (PyErr_CheckSignals())
            return NULL;
    }
    if (m < 0)
        err = errno;
    else if (m == 0)
        err = -1;
    else
        left -= m;
    return Py_BuildValue("nni", (Py_ssize_t)n, (Py_ssize_t)left, err);
}

/* ---- Direction.readable's fast turn ------------------------------------ */

static int
get_ssize(PyObject *o, SlotCache *name, Py_ssize_t *out)
{
    PyObject *v = attr_get(o, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int
set_ssize(PyObject *o, SlotCache *name, Py_ssize_t v)
{
    PyObject *x = PyLong_FromSsize_t(v);
    if (x == NULL)
        return -1;
    int rc = attr_set(o, name, x);
    Py_DECREF(x);
    return rc;
}

/* Whether o.name is None: 1, 0, or -1 on error. */
static int
is_none(PyObject *o, SlotCache *name)
{
    PyObject *v = attr_get(o, name);
    if (v == NULL)
        return -1;
    int none = v == Py_None;
    Py_DECREF(v);
    return none;
}

/* o.name(): 0 or -1. */
static int
call0(PyObject *o, PyObject *name)
{
    PyObject *r = PyObject_CallMethodNoArgs(o, name);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* o.attr.name(): 0 or -1. */
static int
call_on(PyObject *o, SlotCache *attr, PyObject *name)
{
    PyObject *t = attr_get(o, attr);
    if (t == NULL)
        return -1;
    int rc = call0(t, name);
    Py_DECREF(t);
    return rc;
}

/*
 * The idle pipe that pool.take() would lend next (a new reference), or
 * NULL: with an error set, or without one when the fast turn must leave the
 * take to Python (another pool class, no idle pipe, the cap reached, a
 * waiter to tell when a pipe comes back, the cap not computed yet).
 *
 * The pipe is not taken: a turn that ends with it empty (the common case)
 * leaves the pool exactly as take() and give() would; one that must keep
 * it takes it then (take_leased), and take() pops this very pipe.
 */
static PyObject *
peek_pipe(PyObject *pool)
{
    PyObject *inner;
    if (poolType == NULL)
        return NULL;
    if (Py_TYPE(pool) == (PyTypeObject *)unreservedType) {
        Py_ssize_t lent, reserved, maxPipes;
        int none = is_none(pool, &c_u_onReturn);
        if (none <= 0)
            return NULL;
        inner = attr_get(pool, &c_u_pool);
        if (inner == NULL)
            return NULL;
        if (Py_TYPE(inner) != (PyTypeObject *)poolType) {
            Py_DECREF(inner);
            return NULL;
        }
        none = is_none(inner, &c_pp_maxPipes);
        if (none != 0 || get_ssize(inner, &c_pp_maxPipes, &maxPipes) ||
            get_ssize(pool, &c_u_lent, &lent) ||
            get_ssize(inner, &c_pp_reserved, &reserved) ||
            reserved + lent >= maxPipes) {
            Py_DECREF(inner);
            return NULL;
        }
    }
    else if (Py_TYPE(pool) == (PyTypeObject *)poolType) {
        inner = pool;
        Py_INCREF(inner);
    }
    else
        return NULL;
    PyObject *idle = attr_get(inner, &c_pp_idle);
    Py_DECREF(inner);
    if (idle == NULL)
        return NULL;
    PyObject *pipe = NULL;
    if (PyList_CheckExact(idle) && PyList_GET_SIZE(idle) > 0) {
        pipe = PyList_GET_ITEM(idle, PyList_GET_SIZE(idle) - 1);
        Py_INCREF(pipe);
    }
    Py_DECREF(idle);
    return pipe;
}

/* Take the peeked pipe from the pool for real: d.pipe = pool.take(). */
static int
take_leased(PyObject *d, PyObject *pool, PyObject *pipe)
{
    PyObject *p = PyObject_CallMethodNoArgs(pool, s_take);
    if (p == NULL)
        return -1;
    if (p != pipe) {
        Py_DECREF(p);
        PyErr_SetString(PyExc_RuntimeError,
                        "turn(): the pool lent another pipe than its last idle one");
        return -1;
    }
    int rc = attr_set(d, &c_d_pipe, p);
    Py_DECREF(p);
    return rc;
}

/* splice(2), EINTR retried: 0 (*n and errno as splice left them) or -1
 * when a signal handler raised. */
static int
splice_retry(int in, int out, size_t len, ssize_t *n)
{
    for (;;) {
        *n = splice(in, NULL, out, NULL, len, SPLICE_FLAGS);
        if (*n >= 0 || errno != EINTR)
            return 0;
        if (PyErr_CheckSignals())
            return -1;
    }
}

/*
 * turn(d, bulkRead, piece, window, clock) -> int
 *
 * Direction.readable for a direction that is not bulk, has no bandwidth
 * limit and holds no pipe, with an idle pipe in its pool: read the source
 * into the pool's next idle pipe and, for a small read (below bulkRead and
 * at most piece bytes), do the turn's bookkeeping (inPipe, the small-flow
 * window, turns.noteSmall while bulk is about, the turn budget and
 * turns.spent), write the pipe into the destination, and count what moved.
 * Returns
 *    -1  nothing done: Python's path runs (the conditions above do not hold);
 *     0  the turn is over: drained (EAGAIN), end of stream passed on, an
 *        error reported (engine.spliceFailed, d.writeFailed), the
 *        destination full (source stopped, destination watched, the pipe
 *        held), or one small message moved and the pipe empty again;
 *    -2  one full pipe moved: the pipe is held (d.pipe) and Python reads
 *        the next round;
 *   n>0  a bulk read of n bytes sits in the held pipe: Python goes on
 *        from its read with it.
 * bulkRead, piece, window and clock are direction.BULK_READ, PIECE,
 * SMALL_WINDOW and monotonicNow, passed so that a patched one holds here
 * too; when clock is time.monotonic it is read in C.
 */
static PyObject *
ccore_turn(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *d, *clock, *pool = NULL, *pipe = NULL, *turns = NULL;
    Py_ssize_t bulkRead, piece, count, left, moved, rest;
    double window, now, bulkUntil;
    int rfd, wfd, srcfd, dstfd, taken = 0, err = 0, rc;
    ssize_t n = 0, m;
    long result = -1;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "turn() takes 5 arguments");
        return NULL;
    }
    d = args[0];
    clock = args[4];
    bulkRead = PyLong_AsSsize_t(args[1]);
    if (bulkRead == -1 && PyErr_Occurred())
        return NULL;
    piece = PyLong_AsSsize_t(args[2]);
    if (piece == -1 && PyErr_Occurred())
        return NULL;
    window = PyFloat_AsDouble(args[3]);
    if (window == -1.0 && PyErr_Occurred())
        return NULL;

    if ((rc = is_none(d, &c_d_pipe)) <= 0 || (rc = is_none(d, &c_d_limit)) <= 0)
        goto fallback;
    PyObject *bulk = attr_get(d, &c_d_bulk);
    if (bulk == NULL)
        return NULL;
    rc = PyObject_IsTrue(bulk);
    Py_DECREF(bulk);
    if (rc != 0)
        goto fallback;
    if ((pool = attr_get(d, &c_d_pool)) == NULL)
        return NULL;
    if ((pipe = peek_pipe(pool)) == NULL) {
        rc = PyErr_Occurred() ? -1 : 0;
        goto fallback;
    }
    if (get_int(pipe, &c_p_readFD, &rfd) || get_int(pipe, &c_p_writeFD, &wfd) ||
        get_ssize(pipe, &c_p_size, &count) || get_int(d, &c_d_srcfd, &srcfd) ||
        get_int(d, &c_d_dstfd, &dstfd))
        goto fail;
    if (rfd < 0 || count <= 0) {
        rc = 0;
        goto fallback;
    }

    if (splice_retry(srcfd, wfd, (size_t)count, &n))
        goto fail;
    if (n < 0) {
        err = errno;
        n = 0;
        if (err == EAGAIN) {
            result = 0;
            goto done;
        }
        /* The read failed: as Python's path, with the pipe held. */
        if (take_leased(d, pool, pipe))
            goto fail;
        PyObject *e = PyObject_CallFunction(PyExc_OSError, "is", err, strerror(err));
        if (e == NULL)
            goto fail;
        PyObject *engine = attr_get(d, &c_d_engine);
        if (engine == NULL) {
            Py_DECREF(e);
            goto fail;
        }
        PyObject *r = PyObject_CallMethodObjArgs(engine, s_spliceFailed, d, e,
                                                 Py_True, NULL);
        Py_DECREF(engine);
        Py_DECREF(e);
        if (r == NULL)
            goto fail;
        Py_DECREF(r);
        result = 0;
        goto done;
    }
    if (n == 0) {
        /* End of stream (the pipe, never taken, stays in the pool). */
        if (attr_set(d, &c_d_eof, Py_True) ||
            call_on(d, &c_d_src, s_stopReading) || call0(d, s_finish))
            goto fail;
        result = 0;
        goto done;
    }
    if (n >= bulkRead || n > piece) {
        if (take_leased(d, pool, pipe))
            goto fail;
        taken = 1;
        result = n;
        goto done;
    }

    /* A small read: the bookkeeping of Direction.readable. */
    if (set_ssize(d, &c_d_inPipe, n) || (turns = attr_get(d, &c_d_turns)) == NULL)
        goto fail;
    if (clock == monotonic) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = (double)((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1e9;
    }
    else {
        PyObject *t = PyObject_CallNoArgs(clock);
        if (t == NULL)
            goto fail;
        now = PyFloat_AsDouble(t);
        Py_DECREF(t);
        if (now == -1.0 && PyErr_Occurred())
            goto fail;
    }
    PyObject *until = PyFloat_FromDouble(now + window);
    if (until == NULL)
        goto fail;
    if (attr_set(turns, &c_t_smallUntil, until)) {
        Py_DECREF(until);
        goto fail;
    }
    PyObject *bu = attr_get(turns, &c_t_bulkUntil);
    if (bu == NULL) {
        Py_DECREF(until);
        goto fail;
    }
    bulkUntil = PyFloat_AsDouble(bu);
    Py_DECREF(bu);
    if (bulkUntil == -1.0 && PyErr_Occurred()) {
        Py_DECREF(until);
        goto fail;
    }
    if (now < bulkUntil) {
        PyObject *r = PyObject_CallMethodObjArgs(turns, s_noteSmall, d, until, NULL);
        if (r == NULL) {
            Py_DECREF(until);
            goto fail;
        }
        Py_DECREF(r);
    }
    Py_DECREF(until);
    if (get_ssize(turns, &c_t_left, &left) || set_ssize(turns, &c_t_left, left - n))
        goto fail;
    left -= n;
    if (left <= 0 && call0(turns, s_spent))
        goto fail;

    /* Write the pipe into the destination once. */
    if (splice_retry(rfd, dstfd, (size_t)n, &m))
        goto fail;
    rest = n;
    if (m < 0)
        err = errno;
    else if (m == 0)
        err = -1;
    else
        rest -= m;
    if (get_ssize(d, &c_d_moved, &moved) || set_ssize(d, &c_d_moved, moved + n - rest) ||
        set_ssize(d, &c_d_inPipe, rest))
        goto fail;
    if (err || rest) {
        if (take_leased(d, pool, pipe))
            goto fail;
        taken = 1;
        if (err && err != EAGAIN) {
            PyObject *r = PyObject_CallMethod(d, "writeFailed", "i", err);
            if (r == NULL)
                goto fail;
            Py_DECREF(r);
        }
        else if (call_on(d, &c_d_src, s_stopReading) ||
                 call_on(d, &c_d_dst, s_startWriting))
            goto fail;
        result = 0;
        goto done;
    }
    if (n < count || left <= 0) {
        result = 0;
        goto done;
    }
    /* A full pipe moved and budget left: Python reads the next round. */
    if (take_leased(d, pool, pipe))
        goto fail;
    taken = 1;
    result = -2;

done:
    Py_XDECREF(turns);
    Py_XDECREF(pipe);
    Py_XDECREF(pool);
    return PyLong_FromLong(result);

fallback:
    Py_XDECREF(pipe);
    Py_XDECREF(pool);
    if (rc < 0)
        return NULL;
    return PyLong_FromLong(-1);

fail:
    if (n > 0 && !taken) {
        /* Bytes sit in the peeked pipe: take it, so it is not lent again. */
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        if (take_leased(d, pool, pipe))
            PyErr_Clear();
        PyErr_Restore(t, v, tb);
    }
    Py_XDECREF(turns);
    Py_XDECREF(pipe);
    Py_XDECREF(pool);
    return NULL;
}

static PyObject *
ccore_setup(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyType_Check(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "setup(PipePool, UnreservedPipes, time.monotonic)");
        return NULL;
    }
    Py_XSETREF(poolType, Py_NewRef(args[0]));
    Py_XSETREF(unreservedType, Py_NewRef(args[1]));
    Py_XSETREF(monotonic, Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

static PyObject *
ccore_setup_direction(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "setup_direction(Direction, globals())");
        return NULL;
    }
    Py_XSETREF(directionType, Py_NewRef(args[0]));
    Py_XSETREF(directionGlobals, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

static PyMethodDef ccore_methods[] = {
    {"dispatch", (PyCFunction)(void (*)(void))ccore_dispatch, METH_FASTCALL,
     "One turn of a SocketLoop's epoll set (see the module source)."},
    {"interest", (PyCFunction)(void (*)(void))ccore_interest, METH_FASTCALL,
     "A loop member's new interest, told to its SocketLoop's set."},
    {"accept", (PyCFunction)ccore_accept, METH_O,
     "accept(fd) -> (fd, address) | None: a non-blocking accept4."},
    {"move", (PyCFunction)(void (*)(void))ccore_move, METH_FASTCALL,
     "splice source -> pipe, and the pipe into the destination once."},
    {"turn", (PyCFunction)(void (*)(void))ccore_turn, METH_FASTCALL,
     "Direction.readable's small-message turn (see the module source)."},
    {"client_hello", (PyCFunction)(void (*)(void))ccore_client_hello,
     METH_FASTCALL,
     "A ClientHello's common case, or None (see _ccore_hello.c)."},
    {"proxy_header", (PyCFunction)(void (*)(void))ccore_proxy_header,
     METH_FASTCALL,
     "A PROXY header's common case, or None (see _ccore_proxy.c)."},
    {"setup", (PyCFunction)(void (*)(void))ccore_setup, METH_FASTCALL,
     "setup(PipePool, UnreservedPipes, time.monotonic) for turn()."},
    {"setup_direction", (PyCFunction)(void (*)(void))ccore_setup_direction,
     METH_FASTCALL,
     "setup_direction(Direction, its module's globals) for dispatch()."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ccore_module = {
    PyModuleDef_HEAD_INIT,
    "splicetx._relay._ccore",
    "The compiled core of the relay's hot loop (see splicetx._relay.core).",
    -1,
    ccore_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__ccore(void)
{
#define INTERN(var, text)                                                    \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                    \
        return NULL;
    INTERN(s_reading, "reading");
    INTERN(s_writing, "writing");
    INTERN(s_source, "source");
    INTERN(s_sink, "sink");
    INTERN(s_readable, "readable");
    INTERN(s__fd, "_fd");
    INTERN(s_loop, "loop");
    INTERN(s_fd, "fd");
    INTERN(s_members, "members");
    INTERN(s__added, "_added");
    INTERN(s_update, "update");
    INTERN(s_writable, "writable");
    INTERN(s_BULK_READ, "BULK_READ");
    INTERN(s_PIECE, "PIECE");
    INTERN(s_SMALL_WINDOW, "SMALL_WINDOW");
    INTERN(s_monotonicNow, "monotonicNow");
    INTERN(s_pipe, "pipe");
    INTERN(s_limit, "limit");
    INTERN(s_bulk, "bulk");
    INTERN(s_pool, "pool");
    INTERN(s_turns, "turns");
    INTERN(s_src, "src");
    INTERN(s_dst, "dst");
    INTERN(s_srcfd, "srcfd");
    INTERN(s_dstfd, "dstfd");
    INTERN(s_inPipe, "inPipe");
    INTERN(s_moved, "moved");
    INTERN(s_eof, "eof");
    INTERN(s_left, "left");
    INTERN(s_smallUntil, "smallUntil");
    INTERN(s_bulkUntil, "bulkUntil");
    INTERN(s_noteSmall, "noteSmall");
    INTERN(s_spent, "spent");
    INTERN(s_stopReading, "stopReading");
    INTERN(s_startWriting, "startWriting");
    INTERN(s_finish, "finish");
    INTERN(s_writeFailed, "writeFailed");
    INTERN(s_spliceFailed, "spliceFailed");
    INTERN(s_engine, "engine");
    INTERN(s_take, "take");
    INTERN(s__idle, "_idle");
    INTERN(s_readFD, "readFD");
    INTERN(s_writeFD, "writeFD");
    INTERN(s_size, "size");
    INTERN(s_lent, "lent");
    INTERN(s_onReturn, "onReturn");
    INTERN(s_reserved, "reserved");
    INTERN(s__maxPipes, "_maxPipes");
#undef INTERN
    return PyModule_Create(&ccore_module);
}
