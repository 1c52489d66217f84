/* eng_sysmem: how much host memory this process may still allocate, so that a plan larger than
 * that fails with one line before anything is allocated instead of being killed by the kernel's
 * (or the container's) out-of-memory killer half way through its set-up. */
#ifndef ENG_SYSMEM_H
#define ENG_SYSMEM_H

#include <stddef.h>

/* The smaller of MemAvailable (/proc/meminfo) and, for every cgroup from this process's up to the
 * root, memory.max - memory.current (v2) or memory.limit_in_bytes - memory.usage_in_bytes (v1).
 * `why` gets which of them bounds it ("MemAvailable", "cgroup /x memory.max"). Returns -1 when
 * nothing could be read. */
double eng_sysmem_available(char *why, size_t n);
/* The same from given texts (tests): meminfo as /proc/meminfo; cgroup limit and usage as the two
 * files hold them ("max" for no limit); either may be NULL. */
double eng_sysmem_parse(const char *meminfo, const char *cg_limit, const char *cg_usage, int *limited_by_cgroup);

#endif
