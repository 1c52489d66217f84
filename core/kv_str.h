/* kv_str: text from untrusted files (experiment names, config.json keys, profile strings) made
 * safe to show on a terminal, to use as a file name, and to store in fixed-size fields. */
#ifndef KV_STR_H
#define KV_STR_H

#include <stddef.h>

/* Copies src into dst (n bytes), writing control characters as \n, \t, \r or \xHH, C1 controls as
 * \u00HH and bytes that are not UTF-8 as \xHH, so that the text stays one line and cannot drive a
 * terminal. Backslashes are kept as they are, so escaping twice changes nothing. Truncates at a
 * character boundary; returns the length written. */
size_t kv_str_escape(char *dst, size_t n, const char *src);
/* 1 if s is valid UTF-8 (no overlong forms, no surrogates, at most U+10FFFF). */
int kv_str_utf8_ok(const char *s);
/* Copies src into dst (n bytes); where it does not fit, cuts at a UTF-8 character boundary.
 * Returns 1 if it had to cut. */
int kv_str_copy(char *dst, size_t n, const char *src);
/* 1 if s can name a file inside a directory chosen by the user: 1 to max bytes of [A-Za-z0-9._-],
 * not starting with '.' (no hidden files, no '..'), so no '/' and nothing a shell would read. */
int kv_str_is_name(const char *s, size_t max);

#endif
