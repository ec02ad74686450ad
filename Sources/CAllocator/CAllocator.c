#include "CAllocator.h"

#include <stdlib.h>  // defines __GLIBC__ on glibc

#if defined(__GLIBC__)
#include <malloc.h>

size_t signalbox_allocator_free_bytes(void) {
    struct mallinfo2 info = mallinfo2();
    return info.fordblks;
}

int signalbox_allocator_trim(void) { return malloc_trim(0); }
#else
size_t signalbox_allocator_free_bytes(void) { return 0; }
int signalbox_allocator_trim(void) { return 0; }
#endif
