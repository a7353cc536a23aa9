#ifndef CFILESPACE_SHIM_H
#define CFILESPACE_SHIM_H
// fallocate(2), which Swift's Glibc module does not expose (it is a GNU extension).
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <linux/falloc.h>

/// Gives back the disk blocks of the first `length` bytes of a file, keeping its size.
static inline int gateway_punch_hole(int fd, long long length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)length);
}
#endif
