#ifndef SIGNALBOX_CALLOCATOR_H
#define SIGNALBOX_CALLOCATOR_H

#include <stddef.h>

/// Bytes the C allocator holds free in its arenas: freed by the program, not yet given back to
/// the system. Zero where the allocator cannot say.
size_t signalbox_allocator_free_bytes(void);

/// Gives the free pages of every arena back to the system (glibc's malloc_trim). Returns 1 when
/// some memory was released.
int signalbox_allocator_trim(void);

#endif
