/*
 * splicetx._relay._ccore: the compiled reading of a TLS ClientHello, for
 * routing by SNI (docs/design-decisions.md, "The PROXY header and the
 * ClientHello, compiled").
 *
 *   client_hello(data, maxSize) -> None | (serverName, alpn, version, length)
 *       The common case of splicetx._pool.sni.ClientHelloReader.feed, in C:
 *       the first bytes a client sent hold one TLS handshake record that
 *       carries one whole, valid ClientHello of at most maxSize bytes.
 *       Then it returns what parseClientHello would: the SNI host name
 *       (lower-cased, without a trailing dot) or None, the ALPN names as a
 *       tuple of bytes, legacy_version, and the message's length.
 *
 *       Anything else returns None and leaves the judgement to the Python
 *       reader, the reference: a ClientHello over several records, one not
 *       complete yet, and every malformed, foreign or oversized one (the
 *       reader then raises with its exact reason).  So this function never
 *       refuses a client itself; it only accepts, and only what the reader
 *       accepts with the same result (tests/test_snifast.py checks both on
 *       real and mangled ClientHellos).
 *
 * Every read is bounds-checked against the end of the enclosing vector,
 * which is never past the end of data.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "_ccore.h"

#define HANDSHAKE 22
#define CLIENT_HELLO 1
#define MAX_RECORD (16384 + 256)
#define EXT_SERVER_NAME 0
#define EXT_ALPN 16
#define HOST_NAME 0

/* A vector's bounds: bytes [pos, end) of the data. */
typedef struct {
    const unsigned char *d;
    Py_ssize_t pos, end;
} span;

static int
take_uint(span *s, int size, unsigned long *out)
{
    if (s->end - s->pos < size)
        return -1;
    unsigned long v = 0;
    for (int i = 0; i < size; i++)
        v = (v << 8) | s->d[s->pos + i];
    s->pos += size;
    *out = v;
    return 0;
}

/* The vector with a length prefix of lsize bytes at s->pos: its span. */
static int
take_vector(span *s, int lsize, span *out)
{
    unsigned long n;
    if (take_uint(s, lsize, &n) < 0)
        return -1;
    if ((unsigned long)(s->end - s->pos) < n)
        return -1;
    out->d = s->d;
    out->pos = s->pos;
    out->end = s->pos + (Py_ssize_t)n;
    s->pos = out->end;
    return 0;
}

/*
 * The host name in [pos, end), as _hostName makes it: printable ASCII,
 * lower-cased, one trailing dot dropped; NULL without an error set when it
 * is not one (the Python reader says why).
 */
static PyObject *
host_name(const span *raw)
{
    Py_ssize_t n = raw->end - raw->pos;
    const unsigned char *p = raw->d + raw->pos;
    if (n <= 0)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] < 0x21 || p[i] > 0x7e)
            return NULL;
    }
    if (p[n - 1] == '.')
        n--;
    if (n == 0 || p[0] == '.' || memmem(p, (size_t)n, "..", 2) != NULL)
        return NULL;
    PyObject *s = PyUnicode_New(n, 127);
    if (s == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (Py_UCS1)(c + ('a' - 'A')) : c;
    }
    return s;
}

/* The server_name extension's body: 0 and *name (new or None), or -1. */
static int
server_name(span ext, PyObject **name)
{
    span names, raw;
    unsigned long type;
    if (take_vector(&ext, 2, &names) < 0 || ext.pos != ext.end ||
        names.pos == names.end)
        return -1;
    PyObject *found = NULL;
    while (names.pos < names.end) {
        if (take_uint(&names, 1, &type) < 0 || take_vector(&names, 2, &raw) < 0)
            goto bad;
        if (type != HOST_NAME)
            continue;
        if (found != NULL)
            goto bad;
        found = host_name(&raw);
        if (found == NULL)
            return -1;
    }
    *name = found != NULL ? found : Py_NewRef(Py_None);
    return 0;
bad:
    Py_XDECREF(found);
    return -1;
}

/* The ALPN extension's body: 0 and *alpn (a new tuple), or -1. */
static int
alpn_names(span ext, PyObject **alpn)
{
    span list, name;
    if (take_vector(&ext, 2, &list) < 0 || ext.pos != ext.end)
        return -1;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return -1;
    while (list.pos < list.end) {
        if (take_vector(&list, 1, &name) < 0 || name.pos == name.end)
            goto bad;
        PyObject *b = PyBytes_FromStringAndSize(
            (const char *)name.d + name.pos, name.end - name.pos);
        if (b == NULL)
            goto bad;
        int rc = PyList_Append(out, b);
        Py_DECREF(b);
        if (rc < 0)
            goto bad;
    }
    *alpn = PyList_AsTuple(out);
    Py_DECREF(out);
    return *alpn == NULL ? -1 : 0;
bad:
    Py_DECREF(out);
    return -1;
}

PyObject *
ccore_client_hello(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t maxSize;
    PyObject *name = NULL, *alpn = NULL, *result = NULL;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "client_hello(data, maxSize)");
        return NULL;
    }
    maxSize = PyLong_AsSsize_t(args[1]);
    if (maxSize == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *d = view.buf;
    Py_ssize_t len = view.len;

    /* One handshake record, whole. */
    if (len < 5 || d[0] != HANDSHAKE || d[1] != 3)
        goto other;
    Py_ssize_t record = (Py_ssize_t)d[3] << 8 | d[4];
    if (record == 0 || record > MAX_RECORD || len < 5 + record)
        goto other;
    /* It carries the whole ClientHello message and nothing more. */
    if (record < 4 || d[5] != CLIENT_HELLO)
        goto other;
    Py_ssize_t length =
        (Py_ssize_t)d[6] << 16 | (Py_ssize_t)d[7] << 8 | (Py_ssize_t)d[8];
    if (length > maxSize || 4 + length != record)
        goto other;

    span c = {d, 9, 9 + length};
    span v;
    unsigned long version;
    if (take_uint(&c, 2, &version) < 0 || version >> 8 != 3)
        goto other;
    if (c.end - c.pos < 32)
        goto other;
    c.pos += 32;
    if (take_vector(&c, 1, &v) < 0 || v.end - v.pos > 32)
        goto other;
    if (take_vector(&c, 2, &v) < 0 || v.end - v.pos < 2 || (v.end - v.pos) % 2)
        goto other;
    if (take_vector(&c, 1, &v) < 0 || v.end - v.pos < 1)
        goto other;
    if (c.pos < c.end) {
        span exts;
        if (take_vector(&c, 2, &exts) < 0 || c.pos != c.end)
            goto other;
        /* Which extension types were seen: each may come once. */
        unsigned char seen[65536 / 8];
        memset(seen, 0, sizeof seen);
        while (exts.pos < exts.end) {
            unsigned long kind;
            span body;
            if (take_uint(&exts, 2, &kind) < 0 || take_vector(&exts, 2, &body) < 0)
                goto other;
            if (seen[kind >> 3] & (1u << (kind & 7)))
                goto other;
            seen[kind >> 3] |= (unsigned char)(1u << (kind & 7));
            if (kind == EXT_SERVER_NAME) {
                if (server_name(body, &name) < 0)
                    goto other;
            }
            else if (kind == EXT_ALPN) {
                if (alpn_names(body, &alpn) < 0)
                    goto other;
            }
        }
    }
    if (PyErr_Occurred())
        goto done;
    if (alpn == NULL && (alpn = PyTuple_New(0)) == NULL)
        goto done;
    result = Py_BuildValue("(OOkn)", name != NULL ? name : Py_None, alpn,
                           version, length);
    goto done;
other:
    if (PyErr_Occurred()) /* a memory error is not "not the common case" */
        goto done;
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(name);
    Py_XDECREF(alpn);
    PyBuffer_Release(&view);
    return result;
}
