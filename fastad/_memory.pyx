# cython: language_level=3
"""NumPy's data memory while fastad records and sweeps: a caching allocator.

A gradient call allocates the same large arrays every time (a block's
values, a GEMM's result, a cotangent), and frees them when it returns.
glibc hands big blocks back to the system on free and maps fresh pages on
the next malloc, so every call pays a page fault per 4 KB (and, once BLAS
threads exist, a TLB shootdown per unmap): a third of fastad's time beyond
hand-written backprop on a network.  NumPy lets a library install its own
data allocator for a context (NEP 49); fastad's keeps freed blocks of
64 KB and more in size classes (four per octave) and hands them out again,
up to 128 MB in all.  Arrays remember the allocator that made
them, so one that outlives the call (a gradient) comes back here when freed.

`install()` puts it in place for this thread's context and `restore()` puts
back what was there (the transforms do both around their work); `release()`
frees the cached blocks (fad.release_memory).
"""
cimport numpy as cnp

cnp.import_array()

cdef extern from *:
    """
    #include <stdlib.h>
    #include <string.h>
    #include <pthread.h>
    #include <numpy/arrayobject.h>

    /* A 32-byte header before each block: its class (-1: plain malloc) and
       the size asked for (realloc copies that much). */
    #define FAD_HDR 32
    #define FAD_MIN_CACHED ((size_t)64 << 10)
    #define FAD_MAX_CACHED ((size_t)64 << 20)
    #define FAD_NCLASS 64
    typedef struct { long cls; size_t size; } fad_hdr;

    /* NumPy's own allocator takes the small blocks (it caches those itself) */
    static PyDataMemAllocator *fad_np;
    #define FAD_NP_MALLOC(n) fad_np->malloc(fad_np->ctx, (n))
    #define FAD_NP_FREE(p, n) fad_np->free(fad_np->ctx, (p), (n))

    static void *fad_free_list[FAD_NCLASS];   /* linked through the block's first word */
    /* at most 128 MB of free blocks held for the next call */
    static size_t fad_cached_bytes, fad_cache_max = (size_t)128 << 20;
    static pthread_mutex_t fad_lock = PTHREAD_MUTEX_INITIALIZER;

    /* Class of a size: four per octave from 64 KB; -1 outside the cached range. */
    static long fad_class_of(size_t n, size_t *class_size)
    {
        if (n < FAD_MIN_CACHED || n > FAD_MAX_CACHED) return -1;
        size_t base = FAD_MIN_CACHED;
        long cls = 0;
        while (base * 2 < n) { base *= 2; cls += 4; }
        size_t step = base / 4, s = base;
        while (s < n) { s += step; cls++; }
        *class_size = s;
        return cls;
    }

    static size_t fad_class_size(long cls)
    {
        size_t base = FAD_MIN_CACHED << (cls / 4);
        return base + (base / 4) * (size_t)(cls % 4);
    }

    static void *fad_mark(char *raw, long cls, size_t size)
    {
        if (raw == NULL) return NULL;
        fad_hdr *h = (fad_hdr *)raw;
        h->cls = cls;
        h->size = size;
        return raw + FAD_HDR;
    }

    static void *fad_take(long cls)
    {
        void *raw = NULL;
        pthread_mutex_lock(&fad_lock);
        if (fad_free_list[cls] != NULL) {
            raw = fad_free_list[cls];
            fad_free_list[cls] = *(void **)raw;
            fad_cached_bytes -= fad_class_size(cls);
        }
        pthread_mutex_unlock(&fad_lock);
        return raw;
    }

    static void *fad_malloc(void *ctx, size_t size)
    {
        size_t cs;
        long cls = fad_class_of(size, &cs);
        if (cls < 0) return fad_mark(FAD_NP_MALLOC(size + FAD_HDR), -1, size);
        char *raw = fad_take(cls);
        if (raw == NULL) raw = malloc(cs + FAD_HDR);
        return fad_mark(raw, cls, size);
    }

    static void *fad_calloc(void *ctx, size_t nelem, size_t elsize)
    {
        if (elsize && nelem > ((size_t)-1 - FAD_HDR) / elsize) return NULL;
        size_t size = nelem * elsize, cs;
        long cls = fad_class_of(size, &cs);
        if (cls < 0)
            return fad_mark(fad_np->calloc(fad_np->ctx, 1, size + FAD_HDR), -1, size);
        char *raw = fad_take(cls);
        if (raw == NULL)               /* fresh pages are zero already */
            return fad_mark(calloc(1, cs + FAD_HDR), cls, size);
        memset(raw + FAD_HDR, 0, size);
        return fad_mark(raw, cls, size);
    }

    static void fad_free(void *ctx, void *p, size_t size_unused)
    {
        if (p == NULL) return;
        char *raw = (char *)p - FAD_HDR;
        long cls = ((fad_hdr *)raw)->cls;
        if (cls < 0) {
            FAD_NP_FREE(raw, ((fad_hdr *)raw)->size + FAD_HDR);
            return;
        }
        size_t cs = fad_class_size(cls);
        pthread_mutex_lock(&fad_lock);
        if (fad_cached_bytes + cs <= fad_cache_max) {
            *(void **)raw = fad_free_list[cls];
            fad_free_list[cls] = raw;
            fad_cached_bytes += cs;
            raw = NULL;
        }
        pthread_mutex_unlock(&fad_lock);
        free(raw);                     /* (the cache is full: back to the system) */
    }

    static void *fad_realloc(void *ctx, void *p, size_t size)
    {
        if (p == NULL) return fad_malloc(ctx, size);
        fad_hdr *h = (fad_hdr *)((char *)p - FAD_HDR);
        if (h->cls < 0 && size < FAD_MIN_CACHED)
            return fad_mark(fad_np->realloc(fad_np->ctx, (char *)p - FAD_HDR, size + FAD_HDR),
                            -1, size);
        if (h->cls >= 0 && size <= fad_class_size(h->cls)) {
            h->size = size;
            return p;
        }
        void *q = fad_malloc(ctx, size);
        if (q == NULL) return NULL;
        memcpy(q, p, h->size < size ? h->size : size);
        fad_free(ctx, p, h->size);
        return q;
    }

    static size_t fad_release_cached(void)
    {
        size_t freed = 0;
        pthread_mutex_lock(&fad_lock);
        for (long c = 0; c < FAD_NCLASS; c++) {
            while (fad_free_list[c] != NULL) {
                void *raw = fad_free_list[c];
                fad_free_list[c] = *(void **)raw;
                free(raw);
                freed += fad_class_size(c);
            }
        }
        fad_cached_bytes = 0;
        pthread_mutex_unlock(&fad_lock);
        return freed;
    }

    static size_t fad_cached(void) { return fad_cached_bytes; }

    static PyDataMem_Handler fad_handler = {
        "fastad_cache", 1,
        {NULL, fad_malloc, fad_calloc, fad_realloc, fad_free}
    };

    static PyObject *fad_handler_capsule(void)
    {
        PyDataMem_Handler *np_handler = (PyDataMem_Handler *)PyCapsule_GetPointer(
            PyDataMem_DefaultHandler, "mem_handler");
        if (np_handler == NULL) return NULL;
        fad_np = &np_handler->allocator;
        return PyCapsule_New(&fad_handler, "mem_handler", NULL);
    }
    """
    object fad_handler_capsule()
    object PyDataMem_SetHandler(object handler)
    size_t fad_release_cached() nogil
    size_t fad_cached() nogil


_HANDLER = fad_handler_capsule()


def install():
    """Install fastad's allocator for NumPy data in this thread's context;
    returns the allocator it replaced, for restore()."""
    return PyDataMem_SetHandler(_HANDLER)


def restore(previous):
    PyDataMem_SetHandler(previous)


def release():
    """Free the cached blocks; returns how many bytes that was."""
    return fad_release_cached()


def cached_bytes():
    """Bytes held in the cache now (for tests)."""
    return fad_cached()
