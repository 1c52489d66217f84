/* kv_str: escaping, UTF-8-safe copies and file-name checks. */
#include "kv_str.h"
#include <stdio.h>
#include <string.h>

/* Length of the UTF-8 sequence at s (1..4) and its code point, or 0 if the bytes are not UTF-8. */
static int utf8_seq(const unsigned char *s, unsigned *cp) {
    unsigned c = s[0];
    int len;
    unsigned min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) len = 2, min = 0x80, c &= 0x1f;
    else if (c >= 0xe0 && c <= 0xef) len = 3, min = 0x800, c &= 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, min = 0x10000, c &= 0x07;
    else return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0; /* also stops at the terminating NUL */
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    *cp = c;
    return len;
}

size_t kv_str_escape(char *dst, size_t n, const char *src) {
    if (!n) return 0;
    size_t o = 0;
    const unsigned char *s = (const unsigned char *)src;
    while (*s) {
        char esc[8];
        const char *piece = esc;
        size_t plen;
        unsigned cp;
        int len = utf8_seq(s, &cp);
        if (len == 0) { /* not UTF-8: one byte, shown as a byte */
            plen = (size_t)snprintf(esc, sizeof esc, "\\x%02x", s[0]);
            len = 1;
        } else if (cp == '\n') piece = "\\n", plen = 2;
        else if (cp == '\t') piece = "\\t", plen = 2;
        else if (cp == '\r') piece = "\\r", plen = 2;
        else if (cp < 0x20 || cp == 0x7f) plen = (size_t)snprintf(esc, sizeof esc, "\\x%02x", cp);
        else if (cp >= 0x80 && cp <= 0x9f) plen = (size_t)snprintf(esc, sizeof esc, "\\u%04x", cp); /* C1: CSI and friends */
        else piece = (const char *)s, plen = (size_t)len;
        if (o + plen >= n) break; /* whole characters or escapes only */
        memcpy(dst + o, piece, plen);
        o += plen;
        s += len;
    }
    dst[o] = 0;
    return o;
}

int kv_str_utf8_ok(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    unsigned cp;
    while (*p) {
        int len = utf8_seq(p, &cp);
        if (!len) return 0;
        p += len;
    }
    return 1;
}

int kv_str_copy(char *dst, size_t n, const char *src) {
    if (!n) return 1;
    size_t len = strlen(src);
    if (len < n) {
        memcpy(dst, src, len + 1);
        return 0;
    }
    size_t cut = n - 1;
    /* back off over continuation bytes so that no character is split */
    while (cut > 0 && ((unsigned char)src[cut] & 0xc0) == 0x80) cut--;
    memcpy(dst, src, cut);
    dst[cut] = 0;
    return 1;
}

int kv_str_is_name(const char *s, size_t max) {
    size_t len = strlen(s);
    if (len == 0 || len > max || s[0] == '.') return 0;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' ||
              *c == '.'))
            return 0;
    return 1;
}
