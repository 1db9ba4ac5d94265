/* catalog_sync._speedups: compiled forms of the snapshot's hottest pure functions.
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
 *
 * join_line(row, ops, texts, functions, ctx) gives exactly what
 * `pushdown._join_line_py` gives: one NDJSON line of a snapshot, from a result row and
 * the line's ops. A string is written as orjson writes it (`"` and `\\` escaped, control
 * characters as \b \t \n \f \r or \u00xx, everything else as UTF-8).
 *
 * json_path_text(text, steps) gives the JSON of `values.json_path(orjson.loads(text),
 * steps)` where the value is a string, a boolean or null, or None where it cannot vouch
 * for that (the caller then runs Python). It vouches only for a document that orjson
 * surely reads as this scanner does: no escape in any string, no exponent, no number of
 * more than MAX_NUMBER characters, nesting of at most MAX_DEPTH; with no escape, a
 * string's source text is orjson's text for it.
 *
 * slug_list(keys, slugs) gives exactly what `pushdown._slug_list_py` gives for keys as
 * PostgreSQL prints its integers (comma-separated, within bigint): the JSON list of their
 * slugs, by key, each looked up in a dict. Other text is refused (ValueError).
 *
 * tests/test_speedups.py compares each with its Python definition.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
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


/* ---- join_line -------------------------------------------------------------------- */

enum { OP_CONST = 0, OP_RAW = 1, OP_ESCAPED = 2, OP_SLOT = 3 };

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
    char local[2048]; /* most lines fit: no allocation */
} Buffer;

static int
buffer_reserve(Buffer *buffer, Py_ssize_t more)
{
    if (buffer->len + more <= buffer->cap) {
        return 0;
    }
    Py_ssize_t cap = buffer->cap * 2;
    while (cap < buffer->len + more) {
        cap *= 2;
    }
    char *data;
    if (buffer->data == buffer->local) {
        data = PyMem_Malloc((size_t)cap);
        if (data != NULL) {
            memcpy(data, buffer->local, (size_t)buffer->len);
        }
    }
    else {
        data = PyMem_Realloc(buffer->data, (size_t)cap);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = data;
    buffer->cap = cap;
    return 0;
}

static int
buffer_add(Buffer *buffer, const char *data, Py_ssize_t len)
{
    if (buffer_reserve(buffer, len) < 0) {
        return -1;
    }
    memcpy(buffer->data + buffer->len, data, (size_t)len);
    buffer->len += len;
    return 0;
}

/* A str's UTF-8 (cached in the object by CPython), or -1 with an error set. */
static const char *
utf8_of(PyObject *text, Py_ssize_t *len, const char *what)
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "join_line: %s is %.100s, not str", what,
                     Py_TYPE(text)->tp_name);
        return NULL;
    }
    return PyUnicode_AsUTF8AndSize(text, len);
}

/* A str as UTF-8, or bytes as they are: constants and slot texts come as either. */
static int
buffer_add_str(Buffer *buffer, PyObject *text, const char *what)
{
    if (PyBytes_Check(text)) {
        return buffer_add(buffer, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text));
    }
    Py_ssize_t len;
    const char *data = utf8_of(text, &len, what);
    return data == NULL ? -1 : buffer_add(buffer, data, len);
}

/* What follows the backslash for a byte orjson escapes; 'u' for \u00xx; 0: as it is. */
static char ESCAPE[256];

static void
index_escapes(void)
{
    for (int c = 0; c < 0x20; c++) {
        ESCAPE[c] = 'u';
    }
    ESCAPE['\b'] = 'b';
    ESCAPE['\t'] = 't';
    ESCAPE['\n'] = 'n';
    ESCAPE['\f'] = 'f';
    ESCAPE['\r'] = 'r';
    ESCAPE['"'] = '"';
    ESCAPE['\\'] = '\\';
}

static int
buffer_add_json_string(Buffer *buffer, PyObject *text)
{
    Py_ssize_t len;
    const unsigned char *data = (const unsigned char *)utf8_of(text, &len, "an ESCAPED value");
    if (data == NULL) {
        return -1;
    }
    /* At most six bytes for one: \u00xx. */
    if (buffer_reserve(buffer, 2 + 6 * len) < 0) {
        return -1;
    }
    char *out = buffer->data + buffer->len;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char c = data[i];
        char escape = ESCAPE[c];
        if (escape == 0) {
            *out++ = (char)c;
        }
        else if (escape == 'u') {
            static const char HEX[] = "0123456789abcdef";
            out[0] = '\\';
            out[1] = 'u';
            out[2] = '0';
            out[3] = '0';
            out[4] = HEX[c >> 4];
            out[5] = HEX[c & 15];
            out += 6;
        }
        else {
            out[0] = '\\';
            out[1] = escape;
            out += 2;
        }
    }
    *out++ = '"';
    buffer->len = out - buffer->data;
    return 0;
}

static int
join_op(Buffer *buffer, long op, PyObject *arg, PyObject *row, PyObject *texts,
        PyObject *functions, PyObject *ctx)
{
    if (op == OP_CONST) {
        return buffer_add_str(buffer, arg, "a CONST");
    }
    Py_ssize_t at = PyLong_AsSsize_t(arg);
    if (at == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (op == OP_RAW || op == OP_ESCAPED) {
        if (at < 0 || at >= PyTuple_GET_SIZE(row)) {
            PyErr_SetString(PyExc_IndexError, "join_line: a column beyond the row");
            return -1;
        }
        PyObject *value = PyTuple_GET_ITEM(row, at);
        if (op == OP_RAW) {
            return buffer_add_str(buffer, value, "a RAW value");
        }
        return value == Py_None ? buffer_add(buffer, "null", 4)
                                : buffer_add_json_string(buffer, value);
    }
    if (op != OP_SLOT) {
        PyErr_Format(PyExc_ValueError, "join_line: unknown op %ld", op);
        return -1;
    }
    if (at < 0 || at >= PyList_GET_SIZE(texts) || at >= PyTuple_GET_SIZE(functions)) {
        PyErr_SetString(PyExc_IndexError, "join_line: a slot beyond the texts");
        return -1;
    }
    PyObject *text = PyList_GET_ITEM(texts, at);
    if (text == Py_None) {
        PyObject *function = PyTuple_GET_ITEM(functions, at);
        text = PyObject_CallFunctionObjArgs(function, row, ctx, NULL);
        if (text == NULL) {
            return -1; /* the slot's exception (_Fallback) goes to the caller */
        }
        PyList_SET_ITEM(texts, at, text); /* steals the new reference */
        Py_DECREF(Py_None);
    }
    return buffer_add_str(buffer, text, "a slot's text");
}

static PyObject *
join_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5 || !PyTuple_Check(args[1]) || !PyList_Check(args[2]) ||
        !PyTuple_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "join_line(row, ops: tuple, texts: list, functions: tuple, ctx)");
        return NULL;
    }
    PyObject *row = PySequence_Tuple(args[0]); /* the driver's rows are tuples: no copy */
    if (row == NULL) {
        return NULL;
    }
    PyObject *ops = args[1], *texts = args[2], *functions = args[3], *ctx = args[4];
    Buffer buffer;
    buffer.data = buffer.local;
    buffer.len = 0;
    buffer.cap = (Py_ssize_t)sizeof(buffer.local);
    PyObject *result = NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(ops);
    for (Py_ssize_t i = 0; i + 1 < n; i += 2) {
        long op = PyLong_AsLong(PyTuple_GET_ITEM(ops, i));
        if (op == -1 && PyErr_Occurred()) {
            goto done;
        }
        if (join_op(&buffer, op, PyTuple_GET_ITEM(ops, i + 1), row, texts, functions, ctx) < 0) {
            goto done;
        }
    }
    result = PyBytes_FromStringAndSize(buffer.data, buffer.len);
done:
    if (buffer.data != buffer.local) {
        PyMem_Free(buffer.data);
    }
    Py_DECREF(row);
    return result;
}

/* ---- json_path_text ----------------------------------------------------------------- */

#define MAX_DEPTH 128
#define MAX_NUMBER 300 /* characters: at most 1e300, never orjson's "number is infinity" */

enum { J_BAIL = -1, J_OBJECT = 1, J_ARRAY, J_STRING, J_NUMBER, J_LITERAL };

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} Scan;

static void
skip_space(Scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r')) {
        s->p++;
    }
}

/* Past a string (at its quote); J_BAIL where it holds an escape or a control character. */
static int
skip_string(Scan *s)
{
    for (s->p++; s->p < s->end; s->p++) {
        unsigned char c = *s->p;
        if (c == '"') {
            s->p++;
            return J_STRING;
        }
        if (c == '\\' || c < 0x20) {
            return J_BAIL;
        }
    }
    return J_BAIL;
}

static int
is_digit(const Scan *s)
{
    return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}

static int
skip_number(Scan *s)
{
    const unsigned char *start = s->p;
    if (s->p < s->end && *s->p == '-') {
        s->p++;
    }
    if (!is_digit(s)) {
        return J_BAIL;
    }
    if (*s->p++ != '0') {
        while (is_digit(s)) {
            s->p++;
        }
    }
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!is_digit(s)) {
            return J_BAIL;
        }
        while (is_digit(s)) {
            s->p++;
        }
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        return J_BAIL;
    }
    return s->p - start > MAX_NUMBER ? J_BAIL : J_NUMBER;
}

static int
skip_literal(Scan *s)
{
    static const char *const LITERALS[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t len = strlen(LITERALS[i]);
        if ((size_t)(s->end - s->p) >= len && memcmp(s->p, LITERALS[i], len) == 0) {
            s->p += len;
            return J_LITERAL;
        }
    }
    return J_BAIL;
}

/* Past one value (and the space before it); its kind, or J_BAIL. */
static int
skip_value(Scan *s, int depth)
{
    skip_space(s);
    if (s->p >= s->end) {
        return J_BAIL;
    }
    unsigned char c = *s->p;
    if (c == '"') {
        return skip_string(s);
    }
    if (c == 't' || c == 'f' || c == 'n') {
        return skip_literal(s);
    }
    if (c != '{' && c != '[') {
        return skip_number(s);
    }
    if (depth >= MAX_DEPTH) {
        return J_BAIL;
    }
    int kind = c == '{' ? J_OBJECT : J_ARRAY;
    unsigned char close = c == '{' ? '}' : ']';
    s->p++;
    skip_space(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return kind;
    }
    for (;;) {
        if (kind == J_OBJECT) {
            skip_space(s);
            if (s->p >= s->end || *s->p != '"' || skip_string(s) == J_BAIL) {
                return J_BAIL;
            }
            skip_space(s);
            if (s->p >= s->end || *s->p != ':') {
                return J_BAIL;
            }
            s->p++;
        }
        if (skip_value(s, depth + 1) == J_BAIL) {
            return J_BAIL;
        }
        skip_space(s);
        if (s->p >= s->end) {
            return J_BAIL;
        }
        if (*s->p == close) {
            s->p++;
            return kind;
        }
        if (*s->p++ != ',') {
            return J_BAIL;
        }
    }
}

/* In the object at s->p (scanned before), the last member named `key`: its value's start,
 * or NULL. orjson keeps the last of duplicate keys. */
static const unsigned char *
member(Scan *s, const char *key, Py_ssize_t key_len)
{
    const unsigned char *found = NULL;
    s->p++; /* { */
    for (;;) {
        skip_space(s);
        if (*s->p == '}') {
            return found;
        }
        const unsigned char *name = s->p + 1;
        skip_string(s);
        int same = s->p - 1 - name == key_len && memcmp(name, key, (size_t)key_len) == 0;
        skip_space(s);
        s->p++; /* : */
        skip_space(s);
        if (same) {
            found = s->p;
        }
        skip_value(s, 0);
        skip_space(s);
        if (*s->p++ == '}') {
            return found;
        }
    }
}

static PyObject *
json_path_text(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "json_path_text(text, steps: tuple)");
        return NULL;
    }
    if (!PyUnicode_Check(args[0])) {
        Py_RETURN_NONE;
    }
    Py_ssize_t len;
    const char *text = PyUnicode_AsUTF8AndSize(args[0], &len);
    if (text == NULL) { /* a lone surrogate: orjson refuses it too, Python says how */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Scan s = {(const unsigned char *)text, (const unsigned char *)text + len};
    int root = skip_value(&s, 0);
    skip_space(&s);
    if ((root != J_OBJECT && root != J_ARRAY) || s.p != s.end) {
        Py_RETURN_NONE; /* not scanned whole, or a scalar (json_value reads a string again) */
    }
    s.p = (const unsigned char *)text;
    Py_ssize_t n = PyTuple_GET_SIZE(args[1]);
    for (Py_ssize_t i = 0; i < n; i++) {
        skip_space(&s);
        Py_ssize_t key_len;
        const char *key = utf8_of(PyTuple_GET_ITEM(args[1], i), &key_len, "a step");
        if (key == NULL) {
            return NULL;
        }
        /* Not an object (an array: steps here are no indexes), or no such key: null. */
        if (*s.p != '{' || (s.p = member(&s, key, key_len)) == NULL) {
            return PyUnicode_FromStringAndSize("null", 4);
        }
    }
    const unsigned char *start = s.p;
    int kind = skip_value(&s, 0);
    if (kind != J_STRING && kind != J_LITERAL) {
        Py_RETURN_NONE; /* a number, an object or an array: orjson writes it its own way */
    }
    return PyUnicode_DecodeUTF8((const char *)start, s.p - start, NULL);
}

/* ---- slug_list ------------------------------------------------------------------------ */

static int
parse_keys(const char *text, Py_ssize_t len, long long **keys, Py_ssize_t *count)
{
    Py_ssize_t cap = 1;
    for (Py_ssize_t i = 0; i < len; i++) {
        cap += text[i] == ',';
    }
    *keys = PyMem_Malloc((size_t)cap * sizeof(long long));
    if (*keys == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *count = 0;
    const char *p = text, *end = text + len;
    while (p <= end) {
        int negative = p < end && *p == '-';
        p += negative;
        unsigned long long value = 0;
        const char *digits = p;
        while (p < end && *p >= '0' && *p <= '9' && p - digits < 19) {
            value = value * 10 + (unsigned long long)(*p++ - '0');
        }
        unsigned long long most = (unsigned long long)LLONG_MAX + (unsigned long long)negative;
        if (p == digits || (p < end && *p != ',') || value > most) {
            PyErr_Format(PyExc_ValueError, "slug_list: %.100s is not a list of integer keys",
                         text);
            PyMem_Free(*keys);
            return -1;
        }
        (*keys)[(*count)++] = !negative          ? (long long)value
                              : value == most ? LLONG_MIN
                                              : -(long long)value;
        p++; /* the comma, or past the end */
    }
    return 0;
}

static PyObject *
slug_list(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "slug_list(keys: str, slugs: dict)");
        return NULL;
    }
    Py_ssize_t len, count;
    const char *text = PyUnicode_AsUTF8AndSize(args[0], &len);
    long long *keys;
    if (text == NULL || parse_keys(text, len, &keys, &count) < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 1; i < count; i++) { /* insertion sort: most rows have a few */
        long long key = keys[i];
        Py_ssize_t j = i;
        for (; j > 0 && keys[j - 1] > key; j--) {
            keys[j] = keys[j - 1];
        }
        keys[j] = key;
    }
    Buffer buffer;
    buffer.data = buffer.local;
    buffer.len = 0;
    buffer.cap = (Py_ssize_t)sizeof(buffer.local);
    PyObject *result = NULL;
    if (buffer_add(&buffer, "[", 1) < 0) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *key = PyLong_FromLongLong(keys[i]);
        if (key == NULL) {
            goto done;
        }
        PyObject *slug = PyDict_GetItemWithError(args[1], key); /* borrowed */
        Py_DECREF(key);
        if (slug == NULL) {
            if (PyErr_Occurred()) {
                goto done;
            }
            continue;
        }
        if ((buffer.len > 1 && buffer_add(&buffer, ",", 1) < 0) ||
            buffer_add_str(&buffer, slug, "a slug") < 0) {
            goto done;
        }
    }
    if (buffer_add(&buffer, "]", 1) == 0) {
        result = PyUnicode_DecodeUTF8(buffer.data, buffer.len, NULL);
    }
done:
    if (buffer.data != buffer.local) {
        PyMem_Free(buffer.data);
    }
    PyMem_Free(keys);
    return result;
}

static PyMethodDef methods[] = {
    {"html_to_text", (PyCFunction)(void (*)(void))html_to_text, METH_FASTCALL,
     "html_to_text(text, unescape) -> str | None: values._html_to_text_py(text), or None "
     "where a character in a tag name needs the regular expressions' Unicode case rules."},
    {"join_line", (PyCFunction)(void (*)(void))join_line, METH_FASTCALL,
     "join_line(row, ops, texts, functions, ctx) -> bytes: pushdown._join_line_py."},
    {"json_path_text", (PyCFunction)(void (*)(void))json_path_text, METH_FASTCALL,
     "json_path_text(text, steps) -> str | None: the JSON of values.json_path(orjson.loads("
     "text), steps) where it is a string, a boolean or null, or None."},
    {"slug_list", (PyCFunction)(void (*)(void))slug_list, METH_FASTCALL,
     "slug_list(keys, slugs) -> str: pushdown._slug_list_py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "catalog_sync._speedups",
    .m_doc = "Compiled forms of the snapshot's hottest functions (values, pushdown).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    index_names(&DROPPED);
    index_names(&BLOCKS);
    index_escapes();
    return PyModule_Create(&module);
}
