/*
 * splicetx._relay._ccore: the compiled core of the relay's hot loop
 * (docs/design-decisions.md, "A compiled core, optional").
 *
 * Two functions, each doing in C what the pure-Python reference
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
 * The GIL is kept: every system call here is non-blocking.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>

#define MAX_EVENTS 1024
#define SPLICE_FLAGS (SPLICE_F_NONBLOCK | SPLICE_F_MOVE)

static PyObject *s_reading, *s_writing, *s_source, *s_sink, *s_readable,
    *s_writable;

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
call_side(PyObject *m, PyObject *flag, PyObject *side, PyObject *method)
{
    PyObject *want = PyObject_GetAttr(m, flag);
    if (want == NULL)
        return -1;
    int truth = PyObject_IsTrue(want);
    Py_DECREF(want);
    if (truth <= 0)
        return truth;
    PyObject *target = PyObject_GetAttr(m, side);
    if (target == NULL)
        return -1;
    PyObject *r = PyObject_CallMethodNoArgs(target, method);
    Py_DECREF(target);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *
ccore_dispatch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int epfd, maxevents, readEvents, writeEvents;
    struct epoll_event evs[MAX_EVENTS];

    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "dispatch() takes 6 arguments");
        return NULL;
    }
    PyObject *members = args[1], *failed = args[5];
    if (!PyDict_Check(members) || !PyList_Check(failed)) {
        PyErr_SetString(PyExc_TypeError, "dispatch(): members dict, failed list");
        return NULL;
    }
    if (as_int(args[0], &epfd) || as_int(args[2], &maxevents) ||
        as_int(args[3], &readEvents) || as_int(args[4], &writeEvents))
        return NULL;
    if (maxevents < 1)
        maxevents = 1;
    if (maxevents > MAX_EVENTS)
        maxevents = MAX_EVENTS;

    int n = epoll_wait(epfd, evs, maxevents, 0);
    if (n < 0) {
        if (errno == EINTR)
            return PyLong_FromLong(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    for (int i = 0; i < n; i++) {
        uint32_t ev = evs[i].events;
        PyObject *key = PyLong_FromLong(evs[i].data.fd);
        if (key == NULL)
            return NULL;
        PyObject *m = PyDict_GetItemWithError(members, key);
        Py_DECREF(key);
        if (m == NULL) {
            if (PyErr_Occurred())
                return NULL;
            continue;
        }
        /* The member may leave the dict (and be freed) during its calls. */
        Py_INCREF(m);
        int rc = 0;
        if (ev & (uint32_t)readEvents)
            rc = call_side(m, s_reading, s_source, s_readable);
        if (rc == 0 && (ev & (uint32_t)writeEvents))
            rc = call_side(m, s_writing, s_sink, s_writable);
        if (rc < 0) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            int appended = PyList_Append(failed, m);
            Py_DECREF(m);
            if (appended < 0) {
                Py_XDECREF(type);
                Py_XDECREF(value);
                Py_XDECREF(tb);
                return NULL;
            }
            PyErr_Restore(type, value, tb);
            return NULL;
        }
        Py_DECREF(m);
    }
    return PyLong_FromLong(n);
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

static PyMethodDef ccore_methods[] = {
    {"dispatch", (PyCFunction)(void (*)(void))ccore_dispatch, METH_FASTCALL,
     "One turn of a SocketLoop's epoll set (see the module source)."},
    {"move", (PyCFunction)(void (*)(void))ccore_move, METH_FASTCALL,
     "splice source -> pipe, and the pipe into the destination once."},
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
    INTERN(s_writable, "writable");
#undef INTERN
    return PyModule_Create(&ccore_module);
}
