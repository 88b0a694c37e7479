/* The header-block parsing of `proto.http1` in C: the same result, faster.
 *
 *   header_block(buf, start, end) -> (headers, found) | None
 *       The header lines in buf[start:end] (no start line, no blank line; empty when end is
 *       before start), as
 *       `Http1Dissector._headers` returns them: [[name, value], ...] in order, names as sent and
 *       values stripped of spaces, tabs and CRs, and ``found``: the headers the framing and the
 *       entry look at, by lower-case name (the first Host; the others' values joined with ", ").
 *       None for anything but plain ASCII lines of the form "name: value" (a byte over 0x7F, a
 *       line without a colon or starting with a space or tab: obs-fold): then the Python code,
 *       which stays the reference, decides.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static const char *const INTERESTING[] = {
    "content-length", "transfer-encoding", "connection", "upgrade", "content-encoding", "host",
};
#define N_INTERESTING 6

static PyObject *interesting_str[N_INTERESTING];

static int
is_ws(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* found[low] as `_note` keeps it; 0, or -1 on error. */
static int
note(PyObject *found, int which, PyObject *value)
{
    PyObject *key = interesting_str[which];
    PyObject *old = PyDict_GetItemWithError(found, key);
    if (old == NULL) {
        if (PyErr_Occurred())
            return -1;
        return PyDict_SetItem(found, key, value);
    }
    if (which == 5) /* host: the first one */
        return 0;
    PyObject *joined = PyUnicode_FromFormat("%U, %U", old, value);
    if (joined == NULL)
        return -1;
    int rc = PyDict_SetItem(found, key, joined);
    Py_DECREF(joined);
    return rc;
}

static PyObject *
header_block(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, end;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &start, &end))
        return NULL;
    if (start < 0 || end > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "start and end must be within the buffer");
        return NULL;
    }
    if (end < start) /* an empty block, as buf[start:end] is */
        end = start;
    const unsigned char *b = view.buf;
    PyObject *headers = NULL, *found = NULL, *result = NULL;
    for (Py_ssize_t i = start; i < end; i++)
        if (b[i] & 0x80)
            goto slow;
    headers = PyList_New(0);
    found = PyDict_New();
    if (headers == NULL || found == NULL)
        goto done;
    if (start == end)
        goto ok;
    Py_ssize_t line = start;
    for (;;) {
        const unsigned char *nl = memchr(b + line, '\n', (size_t)(end - line));
        Py_ssize_t stop = nl ? nl - b : end;
        const unsigned char *colon = memchr(b + line, ':', (size_t)(stop - line));
        if (colon == NULL || colon == b + line || is_ws(b[line]))
            goto slow;
        Py_ssize_t name_end = colon - b, v = name_end + 1, v_end = stop;
        while (name_end > line && is_ws(b[name_end - 1]))
            name_end--;
        while (v < v_end && (is_ws(b[v]) || b[v] == '\r'))
            v++;
        while (v_end > v && (is_ws(b[v_end - 1]) || b[v_end - 1] == '\r'))
            v_end--;
        PyObject *name = PyUnicode_DecodeASCII((const char *)b + line, name_end - line, NULL);
        PyObject *value = PyUnicode_DecodeASCII((const char *)b + v, v_end - v, NULL);
        PyObject *pair = (name && value) ? PyList_New(2) : NULL;
        if (pair == NULL) {
            Py_XDECREF(name);
            Py_XDECREF(value);
            goto done;
        }
        PyList_SET_ITEM(pair, 0, name);
        PyList_SET_ITEM(pair, 1, value);
        int rc = PyList_Append(headers, pair);
        Py_DECREF(pair);
        if (rc < 0)
            goto done;
        Py_ssize_t len = name_end - line;
        for (int k = 0; k < N_INTERESTING; k++) {
            if ((Py_ssize_t)strlen(INTERESTING[k]) != len)
                continue;
            Py_ssize_t j = 0;
            while (j < len && Py_TOLOWER(b[line + j]) == (unsigned char)INTERESTING[k][j])
                j++;
            if (j == len) {
                if (note(found, k, value) < 0)
                    goto done;
                break;
            }
        }
        if (nl == NULL)
            break;
        line = stop + 1;
    }
ok:
    result = PyTuple_Pack(2, headers, found);
    goto done;
slow:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(headers);
    Py_XDECREF(found);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"header_block", header_block, METH_VARARGS, "The header lines of buf[start:end] (above)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_http1", "Fast paths of proto.http1 (see the source).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__http1(void)
{
    for (int k = 0; k < N_INTERESTING; k++) {
        interesting_str[k] = PyUnicode_InternFromString(INTERESTING[k]);
        if (interesting_str[k] == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
