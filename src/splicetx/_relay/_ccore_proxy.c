/*
 * splicetx._relay._ccore: the compiled reading of a PROXY protocol header
 * (docs/design-decisions.md, "The PROXY header and the ClientHello,
 * compiled").
 *
 *   proxy_header(data, v1, v2) -> None | (version, family, src, sport, dst,
 *                                         dport, length, tlvs)
 *       The common case of splicetx._proxy.proxyheader.parseProxyHeader, in
 *       C: data starts with a whole, valid header of an accepted version
 *       (v1, v2: whether each is accepted) for TCP over IPv4 -- a version 1
 *       "PROXY TCP4 ..." line, or a version 2 PROXY command for
 *       INET/STREAM, with its TLVs.  It returns the fields parseProxyHeader
 *       puts in its ProxyHeader: the addresses as Python writes them, the
 *       header's length and the TLVs as (type, bytes) pairs.
 *
 *       Anything else returns None and leaves the judgement to the Python
 *       parser, the reference: an incomplete header, IPv6, UNKNOWN, LOCAL,
 *       UNSPEC, UNIX and UDP headers, and every malformed one (the parser
 *       then raises with its exact reason).  It never refuses a client
 *       itself (tests/test_proxyfast.py checks both on real, built and
 *       mangled headers).
 *
 * Every read is bounds-checked against the length of data.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <string.h>

#include "_ccore.h"

#define V1_MAX_LENGTH 107
#define V2_FIXED 16

static const char V2_SIGNATURE[12] = "\r\n\r\n\0\r\nQUIT\n";

/* A port of a version 1 line: digits, no leading zero, at most 65535. */
static int
v1_port(const char *p, Py_ssize_t n, long *out)
{
    if (n < 1 || n > 5 || (n > 1 && p[0] == '0'))
        return -1;
    long v = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    if (v > 65535)
        return -1;
    *out = v;
    return 0;
}

/* An IPv4 address of a version 1 line that inet_pton takes, as a str. */
static PyObject *
v1_address(const char *p, Py_ssize_t n)
{
    char buf[INET_ADDRSTRLEN];
    struct in_addr a;
    if (n < 1 || n >= (Py_ssize_t)sizeof buf)
        return NULL;
    memcpy(buf, p, (size_t)n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, &a) != 1)
        return NULL;
    return PyUnicode_DecodeASCII(buf, n, NULL);
}

static PyObject *
parse_v1(const char *d, Py_ssize_t len)
{
    /* The CRLF within the first V1_MAX_LENGTH bytes. */
    Py_ssize_t limit = len < V1_MAX_LENGTH ? len : V1_MAX_LENGTH, end = -1;
    for (Py_ssize_t i = 0; i + 1 < limit; i++) {
        if (d[i] == '\r' && d[i + 1] == '\n') {
            end = i;
            break;
        }
    }
    if (end < 0)
        return NULL;
    /* Six fields separated by single spaces, printable ASCII only. */
    const char *field[6];
    Py_ssize_t size[6];
    int k = 0;
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i <= end; i++) {
        /* Printable ASCII only: anything else is the parser's to judge. */
        if (i < end && d[i] != ' ' && (d[i] < 0x21 || d[i] > 0x7e))
            return NULL;
        if (i == end || d[i] == ' ') {
            if (k == 6)
                return NULL;
            field[k] = d + start;
            size[k] = i - start;
            k++;
            start = i + 1;
        }
    }
    if (k != 6 || size[1] != 4 || memcmp(field[1], "TCP4", 4) != 0)
        return NULL;
    long sport, dport;
    if (v1_port(field[4], size[4], &sport) < 0 || v1_port(field[5], size[5], &dport) < 0)
        return NULL;
    PyObject *src = v1_address(field[2], size[2]);
    if (src == NULL)
        return NULL;
    PyObject *dst = v1_address(field[3], size[3]);
    if (dst == NULL) {
        Py_DECREF(src);
        return NULL;
    }
    PyObject *tlvs = PyTuple_New(0);
    PyObject *r = tlvs == NULL ? NULL
                               : Py_BuildValue("(isOlOlnO)", 1, "TCP4", src, sport,
                                               dst, dport, end + 2, tlvs);
    Py_XDECREF(tlvs);
    Py_DECREF(src);
    Py_DECREF(dst);
    return r;
}

static PyObject *
v2_address(const unsigned char *p)
{
    char buf[INET_ADDRSTRLEN];
    if (inet_ntop(AF_INET, p, buf, sizeof buf) == NULL)
        return NULL;
    return PyUnicode_DecodeASCII(buf, (Py_ssize_t)strlen(buf), NULL);
}

static PyObject *
parse_v2(const unsigned char *d, Py_ssize_t len)
{
    if (len < V2_FIXED || d[12] != 0x21 || d[13] != 0x11)
        return NULL;
    Py_ssize_t size = (Py_ssize_t)d[14] << 8 | d[15];
    Py_ssize_t total = V2_FIXED + size;
    if (size < 12 || len < total)
        return NULL;
    const unsigned char *block = d + V2_FIXED;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    Py_ssize_t pos = 12;
    while (pos < size) {
        if (size - pos < 3)
            goto bad;
        int kind = block[pos];
        Py_ssize_t n = (Py_ssize_t)block[pos + 1] << 8 | block[pos + 2];
        pos += 3;
        if (n > size - pos)
            goto bad;
        PyObject *item = Py_BuildValue("(iy#)", kind, (const char *)block + pos, n);
        if (item == NULL)
            goto bad;
        int rc = PyList_Append(list, item);
        Py_DECREF(item);
        if (rc < 0)
            goto bad;
        pos += n;
    }
    PyObject *tlvs = PyList_AsTuple(list);
    Py_DECREF(list);
    if (tlvs == NULL)
        return NULL;
    PyObject *src = v2_address(block), *dst = v2_address(block + 4);
    PyObject *r = NULL;
    if (src != NULL && dst != NULL)
        r = Py_BuildValue("(isOlOlnO)", 2, "TCP4", src,
                          (long)(block[8] << 8 | block[9]), dst,
                          (long)(block[10] << 8 | block[11]), total, tlvs);
    Py_XDECREF(src);
    Py_XDECREF(dst);
    Py_DECREF(tlvs);
    return r;
bad:
    Py_DECREF(list);
    return NULL;
}

PyObject *
ccore_proxy_header(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "proxy_header(data, v1, v2)");
        return NULL;
    }
    int v1 = PyObject_IsTrue(args[1]), v2 = PyObject_IsTrue(args[2]);
    if (v1 < 0 || v2 < 0)
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const char *d = view.buf;
    Py_ssize_t len = view.len;
    PyObject *r = NULL;
    if (v2 && len >= 12 && memcmp(d, V2_SIGNATURE, 12) == 0)
        r = parse_v2((const unsigned char *)d, len);
    else if (v1 && len >= 6 && memcmp(d, "PROXY ", 6) == 0)
        r = parse_v1(d, len);
    PyBuffer_Release(&view);
    if (r == NULL && !PyErr_Occurred())
        r = Py_NewRef(Py_None);
    return r;
}
