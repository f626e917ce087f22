/*
 * splicetx._relay._ccore: what the core's source files share.  The module
 * is one extension built from several files, one idea each (hatch_build.py
 * compiles them together): _ccore.c (the module, the relay's hot loop),
 * _ccore_hello.c (a TLS ClientHello for SNI routing) and _ccore_proxy.c (a
 * PROXY protocol header).
 */
#ifndef SPLICETX_CCORE_H
#define SPLICETX_CCORE_H

#include <Python.h>

/* client_hello(data, maxSize): see _ccore_hello.c. */
PyObject *ccore_client_hello(PyObject *self, PyObject *const *args,
                             Py_ssize_t nargs);

/* proxy_header(data, v1, v2): see _ccore_proxy.c. */
PyObject *ccore_proxy_header(PyObject *self, PyObject *const *args,
                             Py_ssize_t nargs);

#endif
