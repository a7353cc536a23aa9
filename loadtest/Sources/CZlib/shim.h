#include <zlib.h>

/* inflateInit2 is a macro, which Swift cannot call: 15 + 16 asks zlib for a
   gzip wrapper (header and CRC-32/size trailer checked) and a 32 KiB window. */
static inline int czlib_inflate_init_gzip(z_streamp stream) {
    return inflateInit2(stream, 15 + 16);
}
