/* The scanner of `_speedups.html_to_text` for one width of code unit.
 *
 * _speedups.c includes this file three times, with CHAR defined as Py_UCS1, Py_UCS2 and
 * Py_UCS4 and FN(name) naming that width's functions, so that each reads its string's
 * storage directly (as CPython's own stringlib does). No include guard on purpose.
 */

/* The first `ch` in s[from:n], or -1. */
static Py_ssize_t
FN(find)(const CHAR *s, Py_ssize_t n, Py_UCS4 ch, Py_ssize_t from)
{
    if (from >= n) {
        return -1;
    }
#if WIDTH == 1
    const CHAR *hit = memchr(s + from, (int)ch, (size_t)(n - from));
    return hit == NULL ? -1 : hit - s;
#else
    for (Py_ssize_t i = from; i < n; i++) {
        if (s[i] == ch) {
            return i;
        }
    }
    return -1;
#endif
}

/* The first `>` in s[from:n], remembering the last answer: a pass asks for the next `>`
 * after every `<`, and text with many `<` and no `>` would otherwise be quadratic. */
static Py_ssize_t
FN(find_gt)(const CHAR *s, Py_ssize_t n, GtCache *cache, Py_ssize_t from)
{
    if (cache->asked >= 0 && from >= cache->asked && (cache->found < 0 || from <= cache->found)) {
        return cache->found;
    }
    cache->asked = from;
    cache->found = FN(find)(s, n, '>', from);
    return cache->found;
}

/* The end of the run of word characters at `from`; BAIL if it holds a special. */
static Py_ssize_t
FN(word_run)(const CHAR *s, Py_ssize_t n, Py_ssize_t from)
{
    Py_ssize_t i = from;
    for (; i < n && is_word(s[i]); i++) {
        if (is_special(s[i])) {
            return BAIL;
        }
    }
    return i;
}

/* Index in `names` of s[from:to], ASCII case-insensitive; -1 if none. */
static int
FN(name_in)(const CHAR *s, Py_ssize_t from, Py_ssize_t to, const NameTable *names)
{
    Py_ssize_t len = to - from;
    if (len == 0 || len > MAX_NAME) {
        return -1;
    }
    char lower[MAX_NAME];
    for (Py_ssize_t i = 0; i < len; i++) {
        Py_UCS4 c = ascii_lower(s[from + i]);
        if (c > 127) {
            return -1;
        }
        lower[i] = (char)c;
    }
    return name_index(names, lower, len);
}

/* From `from`: the end of the first `</name\s*>`, else the text's end (`.*?(?:</\1\s*>|\Z)`);
 * BAIL where a special stands where the name is compared. */
static Py_ssize_t
FN(closing_tag_end)(const CHAR *s, Py_ssize_t n, Py_ssize_t from, const char *name)
{
    Py_ssize_t len = (Py_ssize_t)strlen(name);
    for (Py_ssize_t q = FN(find)(s, n, '<', from); q >= 0; q = FN(find)(s, n, '<', q + 1)) {
        if (q + 1 >= n || s[q + 1] != '/') {
            continue;
        }
        Py_ssize_t i = 0;
        for (; i < len && q + 2 + i < n; i++) {
            Py_UCS4 c = s[q + 2 + i];
            if (is_special(c)) {
                return BAIL;
            }
            if (ascii_lower(c) != (Py_UCS4)(unsigned char)name[i]) {
                break;
            }
        }
        if (i < len) {
            continue;
        }
        Py_ssize_t r = q + 2 + len;
        while (r < n && Py_UNICODE_ISSPACE(s[r])) {
            r++;
        }
        if (r < n && s[r] == '>') {
            return r + 1;
        }
    }
    return n;
}

/* `_DROP_RE` at the `<` at i: a comment, or a script, style or template element. */
static Py_ssize_t
FN(match_dropped)(const CHAR *s, Py_ssize_t n, Py_ssize_t i, GtCache *gt)
{
    if (i + 1 >= n) {
        return NO_MATCH;
    }
    Py_UCS4 first = s[i + 1];
    if (first == '!') {
        if (i + 3 >= n || s[i + 2] != '-' || s[i + 3] != '-') {
            return NO_MATCH;
        }
        for (Py_ssize_t q = FN(find)(s, n, '-', i + 4); q >= 0; q = FN(find)(s, n, '-', q + 1)) {
            if (q + 2 < n && s[q + 1] == '-' && s[q + 2] == '>') {
                return q + 3;
            }
        }
        return n;
    }
    if (is_special(first)) {
        return BAIL;
    }
    first = ascii_lower(first);
    if (first != 's' && first != 't') {
        return NO_MATCH;  /* no dropped name starts otherwise */
    }
    Py_ssize_t end = FN(word_run)(s, n, i + 1);
    if (end == BAIL) {
        return BAIL;
    }
    int k = FN(name_in)(s, i + 1, end, &DROPPED);
    if (k < 0) {
        return NO_MATCH;
    }
    Py_ssize_t close = FN(find_gt)(s, n, gt, end);
    if (close < 0) {
        return NO_MATCH;
    }
    return FN(closing_tag_end)(s, n, close + 1, DROPPED.names[k]);
}

/* `_BLOCK_TAG_RE` at the `<` at i: an opening or closing block tag. */
static Py_ssize_t
FN(match_block)(const CHAR *s, Py_ssize_t n, Py_ssize_t i, GtCache *gt)
{
    Py_ssize_t start = i + 1;
    if (start < n && s[start] == '/') {
        start++;
    }
    if (start >= n) {
        return NO_MATCH;
    }
    if (is_special(s[start])) {
        return BAIL;
    }
    if (!is_ascii_alpha(s[start])) {
        return NO_MATCH;
    }
    Py_ssize_t end = FN(word_run)(s, n, start);
    if (end == BAIL) {
        return BAIL;
    }
    if (FN(name_in)(s, start, end, &BLOCKS) < 0) {
        return NO_MATCH;
    }
    Py_ssize_t close = FN(find_gt)(s, n, gt, end);
    return close < 0 ? NO_MATCH : close + 1;
}

/* `_TAG_RE` at the `<` at i: a tag (`</?[A-Za-z]`), declaration (`<!`) or instruction (`<?`). */
static Py_ssize_t
FN(match_tag)(const CHAR *s, Py_ssize_t n, Py_ssize_t i, GtCache *gt)
{
    Py_ssize_t j = i + 1;
    if (j >= n) {
        return NO_MATCH;
    }
    Py_UCS4 c = s[j];
    if (c == '/' && j + 1 < n && is_ascii_alpha(s[j + 1])) {
        j += 2;
    }
    else if (is_ascii_alpha(c) || c == '!' || c == '?') {
        j += 1;
    }
    else {
        return NO_MATCH;
    }
    Py_ssize_t close = FN(find_gt)(s, n, gt, j);
    return close < 0 ? NO_MATCH : close + 1;
}

/* One `regex.sub(" " if space else "", text)` pass of `pass` from `in` into `out` (room for
 * n characters: every match is longer than its replacement). Returns the length written,
 * or BAIL. */
static Py_ssize_t
FN(run_pass)(int pass, const CHAR *in, Py_ssize_t n, CHAR *out)
{
    GtCache gt = {-1, -1};
    Py_ssize_t written = 0, copied = 0;
    for (Py_ssize_t i = FN(find)(in, n, '<', 0); i >= 0;) {
        Py_ssize_t end = pass == 0   ? FN(match_dropped)(in, n, i, &gt)
                         : pass == 1 ? FN(match_block)(in, n, i, &gt)
                                     : FN(match_tag)(in, n, i, &gt);
        if (end == BAIL) {
            return BAIL;
        }
        if (end < 0) {
            i = FN(find)(in, n, '<', i + 1);
            continue;
        }
        memcpy(out + written, in + copied, (size_t)(i - copied) * sizeof(CHAR));
        written += i - copied;
        if (pass != 2) {
            out[written++] = ' ';
        }
        copied = end;
        i = FN(find)(in, n, '<', end);
    }
    memcpy(out + written, in + copied, (size_t)(n - copied) * sizeof(CHAR));
    return written + (n - copied);
}

/* `" ".join(text.split())` into `out`, with every `&amp;` read as `&` when `amp` is set
 * (the caller checked that every `&` starts one). Returns the length written. */
static Py_ssize_t
FN(collapse)(const CHAR *s, Py_ssize_t n, int amp, CHAR *out)
{
    Py_ssize_t w = 0;
    int pending = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        CHAR c = s[i];
        if (Py_UNICODE_ISSPACE(c)) {
            pending = w > 0;
            continue;
        }
        if (pending) {
            out[w++] = ' ';
            pending = 0;
        }
        out[w++] = c;
        if (amp && c == '&') {
            i += 4;  /* `amp;` */
        }
    }
    return w;
}

/* Does every `&` start `&amp;` (`text.count("&") == text.count("&amp;")`)? */
static int
FN(only_amp)(const CHAR *s, Py_ssize_t n)
{
    for (Py_ssize_t i = FN(find)(s, n, '&', 0); i >= 0; i = FN(find)(s, n, '&', i + 1)) {
        if (i + 4 >= n || s[i + 1] != 'a' || s[i + 2] != 'm' || s[i + 3] != 'p' ||
            s[i + 4] != ';') {
            return 0;
        }
    }
    return 1;
}

/* html_to_text for a string of this width; Py_None where it cannot vouch; NULL on error. */
static PyObject *
FN(html_to_text)(const CHAR *s, Py_ssize_t n, PyObject *unescape)
{
    CHAR small[3 * 256];
    CHAR *work = small;
    if (n > 256) {
        work = PyMem_Malloc((size_t)n * 3 * sizeof(CHAR));
        if (work == NULL) {
            return PyErr_NoMemory();
        }
    }
    CHAR *buffers[2] = {work, work + n};
    const CHAR *cur = s;
    Py_ssize_t len = n;
    PyObject *result = NULL;
    if (FN(find)(s, n, '<', 0) >= 0) {
        for (int pass = 0; pass < 3; pass++) {
            CHAR *out = buffers[pass % 2];
            len = FN(run_pass)(pass, cur, len, out);
            if (len == BAIL) {
                result = Py_NewRef(Py_None);
                goto done;
            }
            cur = out;
        }
    }
    if (FN(find)(cur, len, '&', 0) < 0 || FN(only_amp)(cur, len)) {
        CHAR *out = work + 2 * n;
        result = PyUnicode_FromKindAndData(WIDTH, out, FN(collapse)(cur, len, 1, out));
    }
    else {
        PyObject *stripped = PyUnicode_FromKindAndData(WIDTH, cur, len);
        if (stripped != NULL) {
            PyObject *unescaped = PyObject_CallOneArg(unescape, stripped);
            Py_DECREF(stripped);
            if (unescaped != NULL) {
                result = collapse_str(unescaped);
                Py_DECREF(unescaped);
            }
        }
    }
done:
    if (work != small) {
        PyMem_Free(work);
    }
    return result;
}
