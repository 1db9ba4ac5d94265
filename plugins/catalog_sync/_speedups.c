/* catalog_sync._speedups: a compiled form of the snapshot's hottest pure function.
 *
 * html_to_text(text, unescape) gives exactly what `values._html_to_text_py(text)` gives,
 * or None where it cannot vouch for that (the caller then runs the Python function).
 * The Python function is the definition: three regular-expression passes over the text
 * (`_DROP_RE`, `_BLOCK_TAG_RE`, `_TAG_RE`), entities unescaped (`unescape`, unless every
 * `&` starts `&amp;`), whitespace collapsed. Each pass here scans for `<` and tries the
 * match the regular expression would try there, with the same rules for word boundaries
 * (`Py_UNICODE_ISALNUM` or `_`), whitespace (`Py_UNICODE_ISSPACE`) and case (ASCII).
 * Under re.IGNORECASE four non-ASCII characters also match ASCII letters (U+0130,
 * U+0131, U+017F, U+212A): where one stands in a tag name, this returns None.
 * tests/test_speedups.py compares the two on generated and adversarial text.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum { NO_MATCH = -1, BAIL = -2 };

/* The longest tag name compared ("blockquote", "figcaption"). */
#define MAX_NAME 10

static inline int
is_special(Py_UCS4 c)
{
    /* The non-ASCII characters that re.IGNORECASE matches to an ASCII letter. */
    return c == 0x130 || c == 0x131 || c == 0x17f || c == 0x212a;
}

static inline int
is_word(Py_UCS4 c)
{
    if (c < 128) {
        return c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
               (c >= 'A' && c <= 'Z');
    }
    return Py_UNICODE_ISALNUM(c);
}

static inline int
is_ascii_alpha(Py_UCS4 c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline Py_UCS4
ascii_lower(Py_UCS4 c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

typedef struct {
    Py_ssize_t asked; /* the `from` of the last search for `>`, or -1 */
    Py_ssize_t found; /* its answer: the first `>` at or after `asked`, or -1 */
} GtCache;

/* Tag names (lower case, sorted), with where each first letter starts. */
typedef struct {
    const char *const *names;
    int start[27]; /* names[start[c - 'a']:start[c - 'a' + 1]] begin with c */
} NameTable;

static const char *const DROPPED_NAMES[] = {"script", "style", "template", NULL};

/* `_BLOCK_TAG_RE`'s names. */
static const char *const BLOCK_NAMES[] = {
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt",
    "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header",
    "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "td",
    "tfoot", "th", "thead", "tr", "ul", NULL};

static NameTable DROPPED = {DROPPED_NAMES, {0}};
static NameTable BLOCKS = {BLOCK_NAMES, {0}};

static void
index_names(NameTable *table)
{
    int k = 0;
    for (int c = 0; c < 26; c++) {
        table->start[c] = k;
        while (table->names[k] != NULL && table->names[k][0] == 'a' + c) {
            k++;
        }
    }
    table->start[26] = k;
}

/* Index of `lower[:len]` in `table`, or -1. */
static int
name_index(const NameTable *table, const char *lower, Py_ssize_t len)
{
    int c = lower[0] - 'a';
    if (c < 0 || c >= 26) {
        return -1;
    }
    for (int k = table->start[c]; k < table->start[c + 1]; k++) {
        const char *name = table->names[k];
        Py_ssize_t i = 1;
        while (i < len && name[i] == lower[i]) {
            i++; /* stops at the name's end too: `lower` holds no NUL */
        }
        if (i == len && name[len] == '\0') {
            return k;
        }
    }
    return -1;
}

static PyObject *collapse_str(PyObject *text);

/* WIDTH is also the string's kind: PyUnicode_1BYTE_KIND is 1, 2BYTE 2, 4BYTE 4. */

#define WIDTH 1
#define CHAR Py_UCS1
#define FN(name) name##_ucs1
#include "_speedups_scan.h"
#undef WIDTH
#undef CHAR
#undef FN

#define WIDTH 2
#define CHAR Py_UCS2
#define FN(name) name##_ucs2
#include "_speedups_scan.h"
#undef WIDTH
#undef CHAR
#undef FN

#define WIDTH 4
#define CHAR Py_UCS4
#define FN(name) name##_ucs4
#include "_speedups_scan.h"
#undef WIDTH
#undef CHAR
#undef FN

/* `" ".join(text.split())`, for the text `unescape` returned. */
static PyObject *
collapse_str(PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "unescape must return str");
        return NULL;
    }
    int kind = PyUnicode_KIND(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    void *out = PyMem_Malloc((size_t)(n > 0 ? n : 1) * (size_t)kind);
    if (out == NULL) {
        return PyErr_NoMemory();
    }
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t len = kind == PyUnicode_1BYTE_KIND   ? collapse_ucs1(data, n, 0, out)
                     : kind == PyUnicode_2BYTE_KIND ? collapse_ucs2(data, n, 0, out)
                                                    : collapse_ucs4(data, n, 0, out);
    PyObject *result = PyUnicode_FromKindAndData(kind, out, len);
    PyMem_Free(out);
    return result;
}

static PyObject *
html_to_text(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "html_to_text(text: str, unescape)");
        return NULL;
    }
    PyObject *text = args[0];
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    switch (PyUnicode_KIND(text)) {
    case PyUnicode_1BYTE_KIND:
        return html_to_text_ucs1(data, n, args[1]);
    case PyUnicode_2BYTE_KIND:
        return html_to_text_ucs2(data, n, args[1]);
    default:
        return html_to_text_ucs4(data, n, args[1]);
    }
}

static PyMethodDef methods[] = {
    {"html_to_text", (PyCFunction)(void (*)(void))html_to_text, METH_FASTCALL,
     "html_to_text(text, unescape) -> str | None: values._html_to_text_py(text), or None "
     "where a character in a tag name needs the regular expressions' Unicode case rules."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "catalog_sync._speedups",
    .m_doc = "A compiled form of catalog_sync.values.html_to_text.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    index_names(&DROPPED);
    index_names(&BLOCKS);
    return PyModule_Create(&module);
}
